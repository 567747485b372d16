"""``masterlinc coordinator``: the coordinator as a service (several may run; they never act twice)."""

from __future__ import annotations

from pathlib import Path

from hub.config import Settings
from hub.coordinator.rules import AssignmentRules
from hub.coordinator.service import Coordinator, CoordinatorConfig
from hub.runner import ServiceContext, run_service
from hub.sdk.run import reporting_ready, runtime_options
from hub.services import open_bus


def coordinator_config(settings: Settings) -> CoordinatorConfig:
    c = settings.coordinator
    return CoordinatorConfig(
        safe_route=c.safe_route,
        safe_routes=dict(c.safe_routes),
        route_points={p.id: p.client_id for p in settings.pbxs},
        claim_timeout_s=c.claim_timeout_s,
        lease_grace_s=c.lease_grace_s,
        scan_interval_s=c.scan_interval_s,
        compact_every_s=c.compact_every_s,
    )


def load_assignment_rules(settings: Settings, rules_file: Path | None = None) -> AssignmentRules | None:
    """The rules named on the command line or in settings (RuleError names the line and the problem)."""
    path = rules_file or settings.coordinator.rules_file
    return AssignmentRules.load(path) if path is not None else None


async def coordinator_main(ctx: ServiceContext, settings: Settings, rules: AssignmentRules | None) -> None:
    nc = await open_bus(ctx, settings, "masterlinc-coordinator")
    if nc is None:
        return
    try:
        coordinator = Coordinator(
            nc, rules=rules, config=coordinator_config(settings), runtime_options=runtime_options(settings)
        )
        async with reporting_ready(ctx, "coordinator", coordinator.ready):
            await coordinator.run(ctx.stopping)
    finally:
        await nc.close()


async def run_coordinator_service(settings: Settings, rules: AssignmentRules | None) -> int:
    return await run_service(
        "coordinator",
        lambda ctx: coordinator_main(ctx, settings, rules),
        host=settings.http.host,
        port=settings.http.port,
    )
