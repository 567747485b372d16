"""``masterlinc worker``: the PBX worker service for the configured PBX (the first one unless ``--pbx``)."""

from __future__ import annotations

import os
import socket

import httpx

from hub.bus import EventPublisher
from hub.bus.kv import CALL_IDS, RECORDINGS, open_bucket
from hub.config import Settings
from hub.coordinator.guard import LeaseGuard
from hub.logs import get_logger
from hub.pbx import CallControlClient, CallControlGateway, TokenProvider
from hub.pbx.broker import BrokeredTokens
from hub.pbx.http import pbx_http, tls_context
from hub.pbx.session import RestSession
from hub.pbx.token import TokenSource
from hub.pbx.xapi import XapiClient
from hub.runner import ServiceContext, run_service
from hub.services import open_bus
from hub.worker.legs import LegOwnership
from hub.worker.messaging import LogOnlyProvider, MessagingProvider, WebhookProvider
from hub.worker.recording import HubRecorder
from hub.worker.service import Worker, WorkerConfig
from schemas.events import EventBase

log = get_logger(__name__)


async def worker_main(ctx: ServiceContext, settings: Settings, pbx_id: str | None) -> None:
    if not settings.pbxs:
        raise ValueError("no PBX configured: set ML_PBXS__0__ID, ..._BASE_URL, ..._CLIENT_ID and ..._CLIENT_SECRET")
    pbx = settings.pbx(pbx_id) if pbx_id else settings.pbxs[0]
    nc = await open_bus(ctx, settings, f"masterlinc-worker-{pbx.id}")
    if nc is None:
        return
    try:
        ctx.health.set("nats", True)
        async with (
            pbx_http(pbx) as http,
            # the Call Control requests of every command: a leaner HTTP session (hub.pbx.session says why)
            RestSession(pbx.base_url, verify=tls_context(pbx.verify_tls, pbx.ca_file), timeout=10.0) as rest_http,
        ):
            tokens: TokenSource = (
                BrokeredTokens(nc, pbx.id)
                if settings.worker.token_source == "owner"  # noqa: S105 - a mode name, not a secret
                else TokenProvider(http, pbx.client_id, pbx.secret())
            )
            js = nc.jetstream()
            publisher = EventPublisher(js)

            async def publish(event: EventBase) -> None:
                await publisher.publish(event)
                await publisher.flush()

            rest = CallControlClient(rest_http, tokens)
            recorder = HubRecorder(nc, http, tokens, settings.recordings_dir(), await open_bucket(js, RECORDINGS),
                                   publish, holder=f"{socket.gethostname()}-{os.getpid()}")  # fmt: skip
            legs = LegOwnership(rest, await open_bucket(js, CALL_IDS))
            gateway = CallControlGateway(
                rest, pbx, messaging_provider(settings, http), XapiClient(http, tokens), recorder=recorder,
                call_id_of=legs.call_id_of,
            )  # fmt: skip
            w = settings.worker
            config = WorkerConfig(
                name=f"worker-{pbx.id}",
                rate_per_second=w.rate_per_second,
                ack_wait_s=w.ack_wait_s,
                takeover_grace_s=w.takeover_grace_s,
                fault_pause_after_call_s=w.fault_pause_after_call_s,
            )
            guard = LeaseGuard(nc.jetstream(), override_issuers=settings.coordinator.override_issuers)
            worker = Worker(nc, gateway, config=config, lease_check=guard,
                            leg_check=legs.check if settings.worker.verify_legs else None)  # fmt: skip
            ctx.health.set("pbx", True, pbx.base_url)
            try:
                await worker.run(ctx.stopping, pbx.id)
            finally:
                await recorder.close()
    finally:
        await nc.close()


def messaging_provider(settings: Settings, http: httpx.AsyncClient) -> MessagingProvider | None:
    config = settings.messaging
    if config.provider == "log":
        return LogOnlyProvider()
    if config.provider == "webhook" and config.webhook_url and config.webhook_secret is not None:
        return WebhookProvider(http, config.webhook_url, config.webhook_secret.get_secret_value())
    return None


async def run_worker_service(settings: Settings, pbx_id: str | None = None) -> int:
    return await run_service(
        "worker", lambda ctx: worker_main(ctx, settings, pbx_id), host=settings.http.host, port=settings.http.port
    )
