"""Configured secrets never appear in what the services log: the PBX client secret and the bearer tokens the PBX
issued, with the services at DEBUG, through a token revocation and re-fetch, a call, and a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import anyio
import pytest

from hub.bus import connect
from hub.simulator import SimConfig, running_simulator
from tests.helpers import eventually, fresh_bus, wait_until
from tests.ingest.conftest import stream_events

pytestmark = [pytest.mark.anyio, pytest.mark.nats]

SECRET = "s3cr3t-Cl13nt-K3y-do-not-log"


async def test_the_pbx_secret_and_tokens_never_reach_the_logs(nats_server: str) -> None:
    nc = await connect(nats_server, name="test-secrets")
    await fresh_bus(nc.jetstream())
    async with running_simulator(SimConfig(client_secret=SECRET)) as sim:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ML_")}
        env.update({
            "NATS_URL": nats_server, "ML_PBXS__0__ID": "main", "ML_PBXS__0__BASE_URL": sim.base_url,
            "ML_PBXS__0__CLIENT_ID": "800", "ML_PBXS__0__CLIENT_SECRET": SECRET, "ML_LOG_LEVEL": "DEBUG",
            "ML_LOG_FORMAT": "json", "ML_WORKER__RATE_PER_SECOND": "0",
        })  # fmt: skip
        procs = [subprocess.Popen([sys.executable, "-m", "hub.cli", name], env=env, stdout=subprocess.PIPE,  # noqa: ASYNC220
                                  stderr=subprocess.STDOUT) for name in ("ingest", "worker")]  # fmt: skip
        tokens: set[str] = set()
        try:
            await eventually(lambda: sim.sim.tokens.issued >= 1, timeout=30, what="ingest to fetch a token")
            tokens |= set(sim.sim.tokens._active)
            sim.sim.tokens.revoke_all()  # the next read gets a 401: a re-fetch, logged as such
            call = sim.engine.place_call("+15550100", "101")

            async def seen() -> bool:
                return any(e.pbx_call_id == call.callid for e in await stream_events(nc))

            await wait_until(seen, timeout=30, what="the call's events")
            tokens |= set(sim.sim.tokens._active)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            logs = ""
            for proc in procs:
                out, _ = await anyio.to_thread.run_sync(proc.communicate, None, 20)
                logs += out.decode(errors="replace")
    await nc.close()
    assert sim.sim.tokens.issued >= 2 and tokens
    assert "service started" in logs and "DEBUG" in logs.upper()  # the logs are really there, and verbose
    assert SECRET not in logs
    for token in tokens:
        assert token not in logs
        assert token[-24:] not in logs  # nor a recognisable piece of it
