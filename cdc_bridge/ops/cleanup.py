"""`cdc-bridge cleanup`: run retention on demand (the core is cdc_bridge.retention).

The relay daemon runs the same targets every `relay.retention_interval_s`.
"""

from __future__ import annotations

from cdc_bridge import retention
from cdc_bridge.config import BridgeConfig
from cdc_bridge.ops.common import Target
from cdc_bridge.retention import DEFAULT_BATCH, PruneTarget

__all__ = ["PruneTarget", "bridge_targets", "cleanup", "prune"]


def bridge_targets(config: BridgeConfig) -> list[PruneTarget]:
    return retention.targets(config)


def prune(
    target: Target,
    targets: list[PruneTarget],
    *,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH,
) -> dict[str, int]:
    """Rows removed (or, with dry_run, that would be) per table."""
    with target.connect(autocommit=True) as conn:
        return retention.prune(
            conn, target.schema, targets, dry_run=dry_run, batch_size=batch_size
        )


def cleanup(config: BridgeConfig, *, dry_run: bool = False) -> dict[str, int]:
    return prune(Target.of(config), bridge_targets(config), dry_run=dry_run)
