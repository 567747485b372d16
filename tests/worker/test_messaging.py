"""Messaging providers: the signed webhook against a real local receiver, the log-only provider, and refusals."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.config import PbxConfig
from hub.pbx import CallControlClient, CallControlGateway, TokenProvider
from hub.worker.gateway import CommandFailure
from hub.worker.messaging import SIGNATURE_HEADER, TIMESTAMP_HEADER, LogOnlyProvider, WebhookProvider, sign, verify
from schemas import commands as c
from schemas.common import ErrorCode

pytestmark = pytest.mark.anyio
SECRET = "whsec-test"


class Receiver:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        ok = verify(SECRET, request.headers.get(TIMESTAMP_HEADER, ""), body, request.headers.get(SIGNATURE_HEADER, ""))
        if not ok:
            return Response(status_code=401)
        self.received.append(json.loads(body))
        return Response(status_code=self.status)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    target = Receiver()
    app = Starlette(routes=[Route("/hook", target.hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    with anyio.fail_after(10):
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes only a flag
            await asyncio.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield target, f"http://127.0.0.1:{port}/hook"
    server.should_exit = True
    await task


async def test_the_webhook_carries_a_signature_the_receiver_can_verify(receiver: tuple[Receiver, str]) -> None:
    target, url = receiver
    async with httpx.AsyncClient() as http:
        result = await WebhookProvider(http, url, SECRET).send(
            message_id="m1", pbx_id="main", to="+15550100", text="hi"
        )
    assert result["delivered"] is True
    assert target.received == [{"id": "m1", "pbx_id": "main", "to": "+15550100", "text": "hi"}]


async def test_a_wrong_secret_is_refused_by_the_receiver_and_reported(receiver: tuple[Receiver, str]) -> None:
    _, url = receiver
    async with httpx.AsyncClient() as http:
        with pytest.raises(CommandFailure) as info:
            await WebhookProvider(http, url, "not-the-secret").send(message_id="m2", pbx_id="main", to="1", text="x")
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


async def test_a_failing_receiver_is_retryable(receiver: tuple[Receiver, str]) -> None:
    target, url = receiver
    target.status = 503
    async with httpx.AsyncClient() as http:
        with pytest.raises(CommandFailure) as info:
            await WebhookProvider(http, url, SECRET).send(message_id="m3", pbx_id="main", to="1", text="x")
    assert info.value.code is ErrorCode.PBX_UNAVAILABLE


def test_signatures_expire_and_cannot_be_forged() -> None:
    body = b'{"a":1}'
    now = str(int(time.time()))
    assert verify(SECRET, now, body, sign(SECRET, now, body))
    assert not verify(SECRET, now, body + b" ", sign(SECRET, now, body))
    old = str(int(time.time()) - 3600)
    assert not verify(SECRET, old, body, sign(SECRET, old, body))
    assert "whsec" not in repr(WebhookProvider(httpx.AsyncClient(), "http://x", SECRET))


async def test_send_message_through_the_gateway(receiver: tuple[Receiver, str]) -> None:
    target, url = receiver
    pbx = PbxConfig(id="main", base_url="http://127.0.0.1:9", client_id="800", client_secret="s")
    async with httpx.AsyncClient() as http:
        rest = CallControlClient(http, TokenProvider(http, "800", "s"))
        message = c.SendMessage(pbx_id="main", issued_by="agent:t", args=c.SendMessageArgs(to="+15550100", text="ok"))
        hooked = await CallControlGateway(rest, pbx, WebhookProvider(http, url, SECRET)).execute(message)
        logged = await CallControlGateway(rest, pbx, LogOnlyProvider()).execute(message)
        with pytest.raises(CommandFailure) as info:
            await CallControlGateway(rest, pbx).execute(message)
    assert hooked["delivered"] is True
    assert target.received[0]["id"] == message.command_id
    assert logged == {"provider": "log", "delivered": False, "message_id": message.command_id}
    assert info.value.code is ErrorCode.NOT_SUPPORTED
