"""The CRM logging agent: one record per call, built from its events and written through an outbox to the targets.

It owns no calls and sends no commands: it reads every call's events (in order, per call, through the agent feed),
applies them to the calls' states in the events' own transaction (a batch handler: the events pulled together share
one, and a redelivery is skipped), and, once a call has ended, queues its record for each target in that same
transaction. The :class:`Deliverer` sends the
outbox. Late events (a voice transcript, a finished recording) give a new version, which updates the record.

Run with ``--backfill``, replayed events (``masterlinc replay --to-original``) are applied too; they carry their
original ids, so what was already applied is skipped and what was missing is rebuilt: the same records, none twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

import httpx
import sqlalchemy as sa

from agents.crm.delivery import Deliverer
from agents.crm.outbox import DATABASE, CrmStore, RetryPolicy
from agents.crm.targets.base import RemoteTarget
from agents.crm.targets.hubspot import HubSpotCalls, HubSpotTarget
from agents.crm.targets.webhook import WebhookTarget
from hub.logs import get_logger
from hub.sdk import Agent, AgentRuntime, Batch
from schemas import events as ev

log = get_logger(__name__)

AGENT_NAME = "crm"
OBSERVED: tuple[type[ev.EventBase], ...] = (
    ev.CallCreated,
    ev.CallRinging,
    ev.CallAnswered,
    ev.CallTransferred,
    ev.CallDiverted,
    ev.CallParked,
    ev.CallResumed,
    ev.CallEnded,
    ev.RecordingStarted,
    ev.RecordingStopped,
    ev.VoiceTranscript,
    ev.RoutingDecided,
    ev.AgentClaimedCall,
    ev.AgentHandedOff,
)


@dataclass(frozen=True, kw_only=True)
class CrmConfig:
    targets: Sequence[str] = (DATABASE,)
    route_points: Sequence[str] = ()  # the hubs' route-point DNs: their answers are not a person's
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    hubspot_base_url: str = "https://api.hubapi.com"
    hubspot_token: str | None = field(default=None, repr=False)
    hubspot_id_property: str = "masterlinc_record_id"
    hubspot_search_lag_s: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    request_timeout_s: float = 10.0
    poll_s: float = 1.0
    fault_pause_event: str = ""
    fault_pause_s: float = 0.0

    def __post_init__(self) -> None:
        unknown = [t for t in self.targets if t not in (DATABASE, "webhook", "hubspot")]
        if unknown or not self.targets:
            raise ValueError(f"CRM targets are database, webhook and hubspot; not {unknown or 'none'}")
        if "webhook" in self.targets and (not self.webhook_url or not self.webhook_secret):
            raise ValueError(
                "the webhook target needs a URL and a secret (ML_CRM__WEBHOOK_URL, ML_CRM__WEBHOOK_SECRET)"
            )
        if "hubspot" in self.targets and not self.hubspot_token:
            raise ValueError("the hubspot target needs ML_CRM__HUBSPOT_TOKEN (a private app access token)")


class CrmAgent:
    def __init__(self, config: CrmConfig, *, remote: Mapping[str, RemoteTarget] | None = None) -> None:
        self.config = config
        self._remote = dict(remote) if remote is not None else None
        self.store: CrmStore | None = None
        self.deliverer: Deliverer | None = None
        self.runtime: AgentRuntime | None = None
        self.ready = asyncio.Event()
        # The tables come from migration 0003 (masterlinc db upgrade); an empty MetaData only turns on the
        # transaction-with-position (ctx.transaction) for this agent.
        self.agent = Agent(
            AGENT_NAME,
            capabilities=["call-records", *self.config.targets],
            version="1.0",
            description="one CRM record per call, through an outbox, to the database, a webhook or HubSpot",
            database=sa.MetaData(),
        )
        self._register()

    def _register(self) -> None:
        agent = self.agent

        @agent.lifespan
        @contextlib.asynccontextmanager
        async def lifespan(runtime: AgentRuntime) -> AsyncIterator[None]:
            if runtime.tracker is None:
                raise RuntimeError("the CRM agent needs its database: run it with DATABASE_URL set")
            self.runtime = runtime
            self.store = CrmStore(
                runtime.tracker.engine,
                targets=self.config.targets,
                replica=runtime.replica,
                route_points=self.config.route_points,
                retry=self.config.retry,
            )
            await self.store.check()
            async with contextlib.AsyncExitStack() as stack:
                remote = self._remote if self._remote is not None else await self._targets(stack)
                self.deliverer = Deliverer(self.store, remote, runtime.publisher, agent=AGENT_NAME,
                                           poll_s=self.config.poll_s)  # fmt: skip
                task = asyncio.create_task(self.deliverer.run(), name="crm-outbox")
                self.ready.set()
                try:
                    yield
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

        @agent.on_batch(*OBSERVED)
        async def observe(batch: Batch) -> None:
            if self.store is None:
                return
            async with batch.transaction() as tx:
                queued = await self.store.apply_many(tx.conn, tx.events)
            if queued and self.deliverer is not None:
                self.deliverer.wake()
            pause = self.config.fault_pause_event
            if self.config.fault_pause_s and any(e.type_name() == pause for e in tx.events):
                log.warning("fault injection: pausing between commit and ack", event_type=pause)
                await asyncio.sleep(self.config.fault_pause_s)

    async def _targets(self, stack: contextlib.AsyncExitStack) -> dict[str, RemoteTarget]:
        c = self.config
        remote: dict[str, RemoteTarget] = {}
        if "webhook" in c.targets and c.webhook_url and c.webhook_secret:
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=c.request_timeout_s))
            remote["webhook"] = WebhookTarget(http, c.webhook_url, c.webhook_secret)
        if "hubspot" in c.targets and c.hubspot_token:
            api = await stack.enter_async_context(
                httpx.AsyncClient(base_url=c.hubspot_base_url, timeout=c.request_timeout_s)
            )
            remote["hubspot"] = HubSpotTarget(
                HubSpotCalls(api, c.hubspot_token),
                id_property=c.hubspot_id_property,
                search_lag_s=c.hubspot_search_lag_s,
            )
        return remote
