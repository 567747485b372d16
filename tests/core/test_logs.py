"""Structured logs: JSON lines carrying the bound pbx, call and correlation ids; secrets redacted."""

from __future__ import annotations

import asyncio
import json

import pytest

from hub.logs import bind, get_logger, setup_logging


def test_a_task_s_log_lines_carry_its_call_and_correlation_ids(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", "json")
    log = get_logger("test.logs")

    async def handle(call_id: str) -> None:
        bind(pbx_id="main", call_id=call_id, correlation_id=f"c-{call_id}")
        log.info("handled", client_secret="hunter2-not-shown")

    async def both() -> None:
        await asyncio.gather(handle("01JA"), handle("01JB"))

    try:
        asyncio.run(both())
    finally:
        setup_logging("WARNING", "console")  # leave the other tests a quiet log
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    handled = sorted((line["call_id"], line["correlation_id"]) for line in lines if line["event"] == "handled")
    assert handled == [("01JA", "c-01JA"), ("01JB", "c-01JB")]
    assert all(line["pbx_id"] == "main" for line in lines if line["event"] == "handled")
    assert "hunter2" not in json.dumps(lines)


def test_a_logged_exception_carries_its_traceback_with_bearer_tokens_cut_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("INFO", "json")
    log = get_logger("test.logs")

    def fail() -> None:
        raise RuntimeError("PBX said no to Bearer eyJhbGciOi.secret-part")

    try:
        try:
            fail()
        except RuntimeError as exc:
            log.error("leadership failed", exc_info=exc)
    finally:
        setup_logging("WARNING", "console")
    err = capsys.readouterr().err
    [line] = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert "Traceback (most recent call last)" in line["exception"]
    assert "in fail" in line["exception"]  # the frame that raised, not only the exception's repr
    assert "RuntimeError: PBX said no to Bearer ***" in line["exception"]
    assert "secret-part" not in err
