"""The hub around the simulator, as tests/coordinator/test_with_ingest.py assembles it (built from the same helpers):
the simulator, ingest (which owns the one PBX token and serves it), the worker with the lease guard and its token from
ingest; then the coordinator and agents from tests.agents.support."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
from nats.aio.client import Client

from agents.routing import RoutingAgent, RoutingConfig, RoutingRules, RulesSource
from agents.routing.menu import PromptOutput
from hub.audio.stream import ParticipantStream
from hub.config import PbxConfig
from hub.pbx.broker import BrokeredTokens
from hub.simulator import SimConfig, SimHandle, running_simulator
from schemas.common import LegRef
from tests.agents.support import PBX, ROUTE_POINT, SAFE_ROUTE, ingest_and_worker

COORDINATOR_RULES = "rules:\n  - {name: everyone, match: {}, action: {assign: routing}}\n"


def hours(open_now: bool) -> str:
    """Business hours (UTC, every day) that include now, or that do not."""
    now = datetime.now(UTC)
    start = now - timedelta(hours=2) if open_now else now + timedelta(hours=2)
    end = start + timedelta(hours=4 if open_now else 2)
    return f'"{start:%H:%M}-{end:%H:%M}"'


def rules(open_now: bool = True, vip_action: str = '{transfer: "101"}', attempts: int = 2) -> str:
    return f"""\
timezone: UTC
hours: {{mon-sun: {hours(open_now)}}}
lists:
  vip: ["+1555010*"]
  blocked: ["+1900*"]
menus:
  main:
    prompt: {{tone: 440, ms: 300}}
    invalid: {{tone: 300, ms: 150}}
    timeout_s: 0.5
    attempts: {attempts}
    options: {{"1": {{transfer: "101"}}, "2": {{transfer: "102"}}}}
    otherwise: {{transfer: "100"}}
rules:
  - name: blocked
    match: {{caller_list: blocked}}
    action: {{reject: true}}
  - name: closed
    match: {{when: closed}}
    action: {{voicemail: "100"}}
  - name: vip
    match: {{caller_list: vip}}
    action: {vip_action}
default: {{menu: main}}
"""


@dataclass
class Hub:
    sim: SimHandle
    http: httpx.AsyncClient
    pbx: PbxConfig
    nc: Client

    def requests(self, suffix: str) -> list[Any]:
        """Requests the PBX answered with 2xx whose path ends with ``suffix`` (``/transferto``)."""
        return [
            e
            for e in self.sim.journal.of("request")
            if str(e.detail["path"]).endswith(suffix) and int(e.detail["status"]) < 300
        ]

    def transferred_to(self) -> list[str]:
        """Where the simulator transferred legs to (its ground truth), in order."""
        return [str(e.detail["to"]) for e in self.sim.journal.of("state") if e.detail.get("action") == "transferred"]

    def rang(self) -> list[str]:
        """Every DN a new leg of a call appeared on, in order (routes and transfers deliver so)."""
        return [e.dn or "" for e in self.sim.journal.of("state") if e.detail.get("action") == "leg_created"]

    def audio(self) -> Any:
        """The routing agent's audio path to the simulator's streams, with the token from ingest (D§6)."""
        tokens = BrokeredTokens(self.nc, PBX)

        def opener(pbx_id: str, leg: LegRef) -> contextlib.AbstractAsyncContextManager[PromptOutput]:
            stream = ParticipantStream(self.http, tokens, dn=leg.dn, participant_id=leg.participant_id,
                                       connect_timeout_s=5.0)  # fmt: skip
            return stream.session()

        return opener


@contextlib.asynccontextmanager
async def hub_with_simulator(nc: Client, config: SimConfig | None = None) -> AsyncIterator[Hub]:
    async with running_simulator(config) as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        adapter, worker = ingest_and_worker(nc, http, sim.base_url)
        stopping = asyncio.Event()
        tasks = [asyncio.create_task(adapter.run(stopping)), asyncio.create_task(worker.run(stopping))]
        try:
            with anyio.fail_after(10):
                await adapter.synced.wait()
                await worker.ready.wait()
            yield Hub(sim=sim, http=http, pbx=adapter.pbx, nc=nc)
        finally:
            stopping.set()
            with anyio.fail_after(15):
                await asyncio.gather(*tasks)


def routing_agent(hub: Hub, rules: str, tmp_path: Path, **config: Any) -> RoutingAgent:
    path = tmp_path / "routing.yaml"
    path.write_text(rules)
    source = RulesSource(RoutingRules.load(path), path)
    settings = {"route_points": {PBX: ROUTE_POINT}, "safe_routes": {PBX: SAFE_ROUTE}, "watch_interval_s": 0.1,
                **config}  # fmt: skip
    return RoutingAgent(source, RoutingConfig(**settings), audio=hub.audio())
