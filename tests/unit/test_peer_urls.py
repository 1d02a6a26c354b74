"""Where the peer's HTTP client sends a request: `peer_url` (pure)."""

from __future__ import annotations

import pytest

from cdc_bridge.peer.http import PeerUrls, peer_url


@pytest.mark.parametrize(
    ("base", "target", "expected"),
    [
        ("http://127.0.0.1:8081", "/v1/batches", "http://127.0.0.1:8081/v1/batches"),
        ("https://shop.example/wp-json", "/wc/v3/products/7",
         "https://shop.example/wp-json/wc/v3/products/7"),
        ("https://shop.example/wp-json/", "/wc/v3/products/7",
         "https://shop.example/wp-json/wc/v3/products/7"),
        # A key value with a '/' or a space stays one segment, as fill_path quoted it.
        ("http://api", "/api/products/A%2F1%20b", "http://api/api/products/A%2F1%20b"),
        # A `Link` header's next page: absolute, its own query kept.
        ("http://api/v2", "http://api/v2/customers?page=2&per_page=10",
         "http://api/v2/customers?page=2&per_page=10"),
    ],
)
def test_a_path_goes_under_the_peers_url(base: str, target: str, expected: str) -> None:
    assert str(peer_url(base, target)) == expected


@pytest.mark.parametrize(
    "base",
    ["http://127.0.0.1:8081", "https://shop.example/wp-json", "https://shop.example/wp-json/",
     "http://user:pw@api:8080/v2/", "http://api/?token=1"],
)
@pytest.mark.parametrize(
    "target",
    ["/v1/batches", "/api/products/A%2F1%20b", "api/products/7", "//api//x", "/",
     "/api/products/é", "/api/products/a b", "/api/products/100%", "/api/x?sku=A&b=2",
     "/api/x#part", "http://api/v2/customers?page=2", "/api/(1);a=b,c:d@e!$'*+~"],
)
def test_a_peers_urls_are_the_same_whichever_way_they_are_joined(base: str, target: str) -> None:
    assert str(PeerUrls(base)(target)) == str(peer_url(base, target))


def test_parameters_are_added_to_the_query_encoded() -> None:
    url = peer_url(
        "http://api",
        "/api/customers?status=any",
        {"modified_after": "2026-11-30T10:00:00+00:00", "page": 2, "all": True, "q": None},
    )
    assert list(url.query.items()) == [
        ("status", "any"),
        ("modified_after", "2026-11-30T10:00:00+00:00"),
        ("page", "2"),
        ("all", "true"),
        ("q", ""),
    ]
    # '+' encoded: a server would read a bare one as a space.
    assert url.raw_query_string.endswith("10:00:00%2B00:00&page=2&all=true&q=")
