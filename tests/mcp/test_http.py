"""Streamable HTTP, both eras: bearer scopes, Origin checks, clear 401 / 403, tools reaching the worker."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from nats.aio.client import Client as Nats

from hub.mcp.app import http_app, listening_socket, run_http
from hub.mcp.http import StoreTokenVerifier, default_origins
from hub.mcp.tokens import TokenStore
from tests.mcp.support import RecordingGateway, new_pbx, running_facade, running_worker

pytestmark = [pytest.mark.nats, pytest.mark.anyio]

TOOL_CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "make_call", "arguments": {"from_extension": "201", "to": "+14155550100"}},
}


@contextlib.asynccontextmanager
async def http_facade(nc: Nats, pbx: str, store: TokenStore) -> AsyncIterator[str]:
    async with (
        running_facade(
            nc, pbx, principal=None, token_verifier=StoreTokenVerifier(store), issuer_url="http://127.0.0.1"
        ) as facade,
        anyio.create_task_group() as tg,
    ):
        app = http_app(facade, store, host="127.0.0.1", port=0, origins=default_origins("127.0.0.1", 0))
        stopping = anyio.Event()
        bound: list[str] = []
        ready = anyio.Event()

        def on_bound(url: str) -> None:
            bound.append(url)
            ready.set()

        tg.start_soon(lambda: run_http(app, "127.0.0.1", 0, on_bound=on_bound, stopping=stopping))
        with anyio.fail_after(10):
            await ready.wait()
        try:
            yield bound[0]
        finally:
            stopping.set()


def mcp_client(url: str, token: str, mode: str) -> tuple[httpx2.AsyncClient, Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return http, Client(streamable_http_client(url, http_client=http), raise_exceptions=True, mode=mode)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_control_token_works_the_tools_over_http(nc: Nats, tmp_path: Path, mode: str) -> None:
    pbx = new_pbx()
    store = TokenStore(tmp_path / "tokens.json")
    created = store.create(name="assistant", scopes=["control"])
    gateway = RecordingGateway()
    async with running_worker(nc, pbx, gateway), http_facade(nc, pbx, store) as url:
        http, client = mcp_client(url, created.token, mode)
        async with http, client:
            version = client.protocol_version
            names = {t.name for t in (await client.list_tools()).tools}
            with anyio.fail_after(15):
                result = await client.call_tool("make_call", {"from_extension": "201", "to": "+14155550100"})
                exts = await client.call_tool("get_extensions", {})
    assert version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
    assert "make_call" in names
    assert not result.is_error and result.structured_content is not None and result.structured_content["ok"]
    assert exts.structured_content is not None and exts.structured_content["total"] == 2
    assert [cmd.issued_by for cmd in gateway.calls] == [f"mcp:{created.record.id}"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_read_token_reads_but_may_not_control(nc: Nats, tmp_path: Path, mode: str) -> None:
    pbx = new_pbx()
    store = TokenStore(tmp_path / "tokens.json")
    reader = store.create(name="viewer", scopes=["read"])
    gateway = RecordingGateway()
    async with running_worker(nc, pbx, gateway), http_facade(nc, pbx, store) as url:
        http, client = mcp_client(url, reader.token, mode)
        async with http, client:
            with anyio.fail_after(15):
                exts = await client.call_tool("get_extensions", {})
        async with httpx.AsyncClient() as raw:
            refused = await raw.post(
                url,
                json=TOOL_CALL,
                headers={
                    "Authorization": f"Bearer {reader.token}",
                    "Accept": "application/json, text/event-stream",
                    "MCP-Protocol-Version": "2025-11-25",
                },
            )
    assert exts.structured_content is not None and exts.structured_content["ok"]
    assert refused.status_code == 403
    assert refused.json()["error"] == "insufficient_scope"
    assert "make_call needs the control scope" in refused.json()["error_description"]
    assert 'scope="control"' in refused.headers["www-authenticate"]
    assert gateway.calls == []


async def test_missing_wrong_and_revoked_tokens_get_a_clear_401(nc: Nats, tmp_path: Path) -> None:
    pbx = new_pbx()
    store = TokenStore(tmp_path / "tokens.json")
    revoked = store.create(scopes=["control"])
    store.revoke(revoked.record.id)
    headers = {"Accept": "application/json, text/event-stream"}
    async with http_facade(nc, pbx, store) as url, httpx.AsyncClient() as raw:
        missing = await raw.post(url, json=TOOL_CALL, headers=headers)
        wrong = await raw.post(url, json=TOOL_CALL, headers={**headers, "Authorization": "Bearer mlt_nope_nope"})
        gone = await raw.post(url, json=TOOL_CALL, headers={**headers, "Authorization": f"Bearer {revoked.token}"})
    assert missing.status_code == 401
    assert "no bearer token" in missing.json()["error_description"]
    assert "masterlinc mcp token create" in missing.json()["error_description"]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.json()["error_description"]
    assert gone.status_code == 401


async def test_a_foreign_browser_origin_is_refused(nc: Nats, tmp_path: Path) -> None:
    pbx = new_pbx()
    store = TokenStore(tmp_path / "tokens.json")
    token = store.create(scopes=["control"]).token
    async with http_facade(nc, pbx, store) as url, httpx.AsyncClient() as raw:
        refused = await raw.post(
            url,
            json=TOOL_CALL,
            headers={
                "Authorization": f"Bearer {token}",
                "Origin": "https://evil.example",
                "Accept": "application/json, text/event-stream",
            },
        )
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden_origin"
    assert "--allow-origin" in refused.json()["error_description"]


async def test_accepted_http_connections_have_nagle_off() -> None:
    """With Nagle on, a response body waits ~40 ms for the client's delayed ACK of the headers (every tool call)."""
    accepted: asyncio.Queue[int] = asyncio.Queue()

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        accepted.put_nowait(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connect, sock=listening_socket("127.0.0.1", 0))
    async with server:
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(accepted.get(), 5) == 1
        writer.close()
