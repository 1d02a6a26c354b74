"""`cdc-bridge` whose REST peer answers every request 200 at once, without any I/O.

For `bench_rest.py --own-work`: the relay's own CPU per change (reading, planning each
request and its URL, judging and recording), with no HTTP client work at all.
Usage: python bench/rest/null_peer.py --config FILE run
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from typing import Any

from cdc_bridge.cli import main
from cdc_bridge.peer import http

OK = http.Response(200, {}, b"{}")


async def _answer() -> http.Response:
    return OK


def request(
    self: http.PeerClient,
    method: str,
    target: str,
    *,
    body: bytes | None = None,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Coroutine[Any, Any, http.Response]:
    self._url(target, params)  # the relay's own part of a request: its URL
    return _answer()


http.PeerClient.request = request  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
