"""A webhook receiver on a real socket, on a port chosen before it listens (so a test can have it down first)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hub.worker.messaging import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

SECRET = "whsec-test-0123456789abcdef"


@dataclass
class Receiver:
    secret: str = SECRET
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0

    async def hook(self, request: Request) -> JSONResponse:
        body = await request.body()
        headers = request.headers
        if not verify(self.secret, headers.get(TIMESTAMP_HEADER, ""), body, headers.get(SIGNATURE_HEADER, "")):
            self.bad_signatures += 1
            return JSONResponse({"error": "bad signature"}, status_code=401)
        self.deliveries.append({"key": headers.get("idempotency-key"), "body": json.loads(body)})
        return JSONResponse({"id": f"hook-{len(self.deliveries)}"})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def listening(receiver: Receiver, port: int) -> AsyncIterator[None]:
    server = _QuietServer(uvicorn.Config(receiver.app(), host="127.0.0.1", port=port, log_level="warning",
                                         lifespan="off"))  # fmt: skip
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.002)
    try:
        yield
    finally:
        server.should_exit = True
        await task
