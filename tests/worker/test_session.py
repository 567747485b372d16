"""The worker's lean Call Control session (hub.pbx.session) and event loop (hub.loop): the same answers and errors
as through httpx, and an action is never sent twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import httpx
import pytest

from hub import natsd
from hub.loop import loop_factory, run
from hub.pbx import CallControlClient, TokenProvider
from hub.pbx.errors import PbxNotFound, PbxUnavailable
from hub.pbx.session import RestSession
from hub.pbx.token import TokenSource
from hub.simulator import running_simulator

pytestmark = pytest.mark.anyio


class FixedToken:
    async def token(self) -> str:
        return "t"

    async def refresh(self, stale: str | None) -> str:
        return "t"


async def test_call_control_reads_and_acts_through_the_session_as_through_httpx() -> None:
    async with (
        running_simulator() as sim,
        httpx.AsyncClient(base_url=sim.base_url) as plain,
        RestSession(sim.base_url) as lean,
    ):
        tokens: TokenSource = TokenProvider(plain, "800", "sim-secret")
        placed = (await plain.post("/_sim/calls", json={"from": "+15550001", "to": "800"})).json()
        leg = next(p for p in placed["legs"] if p["dn"] == "800")
        rest = CallControlClient(lean, tokens)
        read = await rest.participant("800", leg["id"])
        assert read == await CallControlClient(plain, tokens).participant("800", leg["id"])
        assert read["legid"] == leg["legid"]
        await rest.action("800", leg["id"], "drop")
        with pytest.raises(PbxNotFound):  # a 404 comes back as the status, translated by the client as before
            await rest.participant("800", leg["id"])


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Starts a raw TCP server with the given connection handler; its base URL."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> str:
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    length = next(
        (int(line.split(":")[1]) for line in head.split("\r\n") if line.lower().startswith("content-length")), 0
    )
    await reader.readexactly(length)
    return head.split(" ", 1)[0]


async def test_an_action_on_a_connection_the_pbx_drops_is_sent_once(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    """aiohttp re-sends idempotent requests on a dead keep-alive connection; a POST must fail instead (one PBX call
    per command, D§8)."""
    seen: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await _read_request(reader))  # the first request on the connection is answered, kept alive
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError):
            seen.append(await _read_request(reader))  # the next one: closed without an answer
        writer.close()

    base = await raw_server(handler)
    async with RestSession(base) as http:
        rest = CallControlClient(http, FixedToken())
        await rest.participant("800", 1)
        with pytest.raises(PbxUnavailable, match="RemoteProtocolError"):
            await rest.action("800", 1, "drop")
    assert seen == ["GET", "POST"]


async def test_an_unreachable_pbx_is_unavailable_with_the_reason() -> None:
    base = f"http://127.0.0.1:{natsd.free_port()}"  # nothing listens there
    async with RestSession(base) as http:
        with pytest.raises(PbxUnavailable, match="ConnectError"):
            await CallControlClient(http, FixedToken()).participant("800", 1)


async def test_a_pbx_that_never_answers_is_a_read_timeout(raw_server: Callable[[Handler], Awaitable[str]]) -> None:
    answered = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await answered.wait()  # never answers while the client waits
        writer.close()

    base = await raw_server(handler)
    async with RestSession(base, timeout=0.2) as http:
        with anyio.fail_after(5), pytest.raises(PbxUnavailable, match="ReadTimeout"):
            await CallControlClient(http, FixedToken()).action("800", 1, "drop")
    answered.set()


async def test_the_session_sends_the_json_body_and_the_bearer_token(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    """3CX wants ``Content-Type: application/json`` and a body (``{}``) on every participant action."""
    heads: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        heads.append(head + (await reader.readexactly(2)).decode())
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 25\r\n\r\n{"finalstatus":"Success"}')
        await writer.drain()
        writer.close()

    base = await raw_server(handler)
    async with RestSession(base) as http:
        assert await CallControlClient(http, FixedToken()).action("800", 3, "drop") == {"finalstatus": "Success"}
    [head] = heads
    assert head.startswith("POST /callcontrol/800/participants/3/drop HTTP/1.1\r\n")
    lines = head.lower().split("\r\n")
    assert "content-type: application/json" in lines
    assert "authorization: bearer t" in lines
    assert head.endswith("{}")


def test_services_run_on_uvloop_where_it_is_installed() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def which() -> type[asyncio.AbstractEventLoop]:
        return type(asyncio.get_running_loop())

    assert loop_factory() is uvloop.new_event_loop
    assert issubclass(run(which()), uvloop.Loop)
