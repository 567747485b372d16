"""``mcp serve --transport http`` as a real process has /healthz, /readyz and /metrics like every other service
(compose's healthcheck and ``up`` rely on them), and refuses to put them on the MCP port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from hub import natsd
from tests.helpers import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path, nats_url: str, health_port: int) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "NATS_URL": nats_url,
        "ML_DATA_DIR": str(tmp_path),
        "ML_LOG_LEVEL": "WARNING",
        "ML_HTTP__PORT": str(health_port),
    }


async def test_the_http_facade_reports_ready_once_its_port_and_the_bus_are_up(nats_server: str, tmp_path: Path) -> None:
    mcp_port, health_port = natsd.free_port(), natsd.free_port()
    args = [sys.executable, "-m", "hub.mcp", "serve", "--transport", "http", "--port", str(mcp_port), "--pbx", "main"]
    proc = subprocess.Popen(args, env=_env(tmp_path, nats_server, health_port), stderr=subprocess.PIPE)  # noqa: ASYNC220
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{health_port}") as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_until(ready, timeout=20, what="the facade's /readyz")
            body = (await http.get("/readyz")).json()
            assert body["components"]["nats"]["ready"]
            assert body["components"]["http"]["detail"] == f"http://127.0.0.1:{mcp_port}/mcp"
            assert (await http.get("/healthz")).json() == {"alive": True}
            assert "python_info" in (await http.get("/metrics")).text
            unauthenticated = await http.get(f"http://127.0.0.1:{mcp_port}/mcp")
            assert unauthenticated.status_code == 401  # the MCP port itself still wants a token
    finally:
        proc.terminate()
        proc.wait(15)
        if proc.stderr is not None:
            proc.stderr.close()


def test_health_endpoints_on_the_mcp_port_are_refused_with_what_to_do(tmp_path: Path) -> None:
    port = natsd.free_port()
    args = [sys.executable, "-m", "hub.mcp", "serve", "--transport", "http", "--port", str(port), "--pbx", "main"]
    done = subprocess.run(args, env=_env(tmp_path, "nats://127.0.0.1:1", port), capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 2
    assert f"both {port}: give them different ports" in done.stderr
