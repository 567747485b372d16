"""Call ids, numbers, extensions and subjects that try to inject (wildcards, dots, SQL, path segments) are rejected
with a clear error before anything reaches the bus, the PBX or the log. (Bearer tokens over HTTP: missing, wrong,
revoked and read-only are covered in tests/mcp/test_http.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from nats.aio.client import Client as Nats
from pydantic import ValidationError

from schemas import commands as c
from schemas import subjects
from schemas.common import LegRef
from schemas.tokens import InvalidTokenError, check_token
from tests.mcp.support import RecordingGateway, new_pbx, running_facade, running_worker

INJECTED_IDS = ["x.>", "*", ">", "a.b", "1' OR '1'='1", "x;DROP TABLE events", "../../etc/passwd", "a b", "a\nb",
                "ml.evt.*.call.*.ended", "%2e%2e%2f"]  # fmt: skip
INJECTED_NUMBERS = ["101/../800", "+1 415 555 0100", "９１１", "911; DROP", "${jndi:x}", "*67 911", "101\x00"]


@pytest.mark.parametrize("value", INJECTED_IDS)
def test_subject_tokens_refuse_what_could_widen_or_split_a_subject(value: str) -> None:
    with pytest.raises(InvalidTokenError, match="is not a valid subject token"):
        check_token(value, "call id")
    with pytest.raises((InvalidTokenError, ValueError)):
        subjects.call_filter(value)


@pytest.mark.parametrize("value", INJECTED_IDS)
def test_commands_cannot_carry_an_injected_call_id_or_leg(value: str) -> None:
    with pytest.raises(ValidationError):
        c.Drop(pbx_id="main", issued_by="agent:x", call_id=value, leg=LegRef(dn="800", participant_id=1))
    with pytest.raises(ValidationError):
        c.Drop(pbx_id="main", issued_by="agent:x", call_id="01JCALL", leg=LegRef(dn=value, participant_id=1))


@pytest.mark.parametrize("value", INJECTED_NUMBERS)
def test_numbers_and_extensions_refuse_path_segments_spaces_and_look_alike_digits(value: str) -> None:
    with pytest.raises(ValidationError):
        c.MakeCallArgs.model_validate({"from": "101", "to": value})
    with pytest.raises(ValidationError):
        c.MakeCallArgs.model_validate({"from": value, "to": "102"})


@pytest.mark.nats
@pytest.mark.anyio
async def test_the_mcp_facade_refuses_injected_arguments_before_the_bus(nc: Nats) -> None:
    pbx = new_pbx()
    gateway = RecordingGateway()
    results: list[Any] = []
    async with (
        running_worker(nc, pbx, gateway),
        running_facade(nc, pbx) as facade,
        Client(facade.server, raise_exceptions=True) as client,
    ):
        for value in ("x.>", "1' OR '1'='1", "../../etc/passwd"):
            results.append(await client.call_tool("drop_call", {"call_id": value}))
            leg = {"dn": value, "participant_id": 1}
            results.append(await client.call_tool("drop_call", {"call_id": "01JCALL", "leg": leg}))
            with pytest.raises(MCPError, match="is not an extension number|Unknown resource"):
                await client.read_resource(f"3cx://extensions/{value}/presence")
        for value in ("101/../800", "９１１", "+1 415 555 0100"):
            results.append(await client.call_tool("make_call", {"from_extension": "101", "to": value}))
    assert len(results) == 9 and all(r.is_error for r in results)  # every injected argument refused
    assert gateway.calls == [] and gateway.queries == []  # nothing reached the worker


def test_the_log_cli_refuses_an_injected_call_id_with_a_clear_error(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "hub.cli", "events", "show", "--call", "1' OR '1'='1"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"ML_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "is not a valid subject token" in run.stderr and "Traceback" not in run.stderr
