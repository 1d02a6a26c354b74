"""Which module serves which kind of peer: the one place that knows them all.

A new kind of peer is a config model (config.PEER_KINDS), a module implementing
`endpoint.Endpoint`, and one line here.
"""

from __future__ import annotations

from cdc_bridge.config import BridgeConfig, BridgePeer, PeerBase, RestPeer
from cdc_bridge.outbox import Encoded
from cdc_bridge.peer.bridge import BridgeEndpoint
from cdc_bridge.peer.endpoint import Capabilities, Endpoint
from cdc_bridge.peer.rest import RestEndpoint

_ENDPOINTS: dict[type[PeerBase], type[BridgeEndpoint] | type[RestEndpoint]] = {
    BridgePeer: BridgeEndpoint,
    RestPeer: RestEndpoint,
}


def capabilities(peer: PeerBase) -> Capabilities:
    """What the configured kind of peer does (without connecting to it)."""
    return _ENDPOINTS[type(peer)].capabilities


def endpoint(config: BridgeConfig) -> Endpoint:
    """The configured peer's endpoint. Nothing is opened until it is first used."""
    return _ENDPOINTS[type(config.peer)](config)


def encoded_tables(config: BridgeConfig) -> list[str]:
    """The tables whose changes made here PostgreSQL encodes as the relay reads them, in
    the form the kind of peer takes (`Capabilities.encoded`): whole-row tables that ship
    unchanged, and that the kind takes so. A table mapped to an entity ships translated:
    PostgreSQL encodes those that `Outbound.encoded_entities` names (for the batch
    protocol), the relay translates the others."""
    kind = _ENDPOINTS[type(config.peer)]
    if kind.capabilities.encoded is Encoded.NOTHING:
        return []
    return [
        s.label
        for s in config.table_specs
        if s.captures and s.ships_whole_rows and not s.mapped and kind.takes_encoded(s)
    ]
