"""`masterlinc config check` explains each problem with what to do, against real services and the simulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.config import load_settings
from hub.configcheck import NO_CALL_CONTROL, NO_XAPI, WRONG_CREDENTIALS, run_checks
from hub.eventlog.migrate import upgrade_async
from hub.natsd import free_port
from hub.simulator import SimConfig, running_simulator

pytestmark = pytest.mark.anyio


def _pbx_env(monkeypatch: pytest.MonkeyPatch, url: str, secret: str | None) -> None:
    monkeypatch.setenv("ML_PBXS__0__ID", "main")
    monkeypatch.setenv("ML_PBXS__0__BASE_URL", url)
    monkeypatch.setenv("ML_PBXS__0__CLIENT_ID", "800")
    if secret is not None:
        monkeypatch.setenv("ML_PBXS__0__CLIENT_SECRET", secret)


@pytest.mark.nats
async def test_a_healthy_setup_passes(monkeypatch: pytest.MonkeyPatch, nats_server: str, tmp_path: object) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/ok.db"
    await upgrade_async(db)
    monkeypatch.setenv("NATS_URL", nats_server)
    monkeypatch.setenv("DATABASE_URL", db)
    async with running_simulator() as sim:
        _pbx_env(monkeypatch, sim.base_url, "sim-secret")
        findings = await run_checks(load_settings())
    assert [f.ok for f in findings] == [True, True, True, True], [f.line() for f in findings]
    assert "route point 800" in findings[2].detail


async def test_each_problem_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("NATS_URL", f"nats://127.0.0.1:{free_port()}")
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/empty.db")
    async with running_simulator() as sim:
        _pbx_env(monkeypatch, sim.base_url, "wrong-secret")
        bus, db, pbx = await run_checks(load_settings())
    assert not bus.ok
    assert "is nats-server running" in bus.detail
    assert not db.ok
    assert "masterlinc db upgrade" in db.detail
    assert not pbx.ok
    assert pbx.detail == WRONG_CREDENTIALS
    assert "wrong-secret" not in pbx.line()


async def test_missing_secret_unreachable_pbx_and_no_call_control(monkeypatch: pytest.MonkeyPatch) -> None:
    _pbx_env(monkeypatch, f"http://127.0.0.1:{free_port()}", None)
    [*_, missing] = await run_checks(load_settings())
    assert "ML_PBXS__0__CLIENT_SECRET" in missing.detail
    monkeypatch.setenv("ML_PBXS__0__CLIENT_SECRET", "x")
    [*_, unreachable] = await run_checks(load_settings())
    assert "check base_url" in unreachable.detail
    # an API integration without Call Control (no Enterprise licence, or the box not ticked)
    async with running_simulator(SimConfig(call_control_enabled=False)) as sim:
        _pbx_env(monkeypatch, sim.base_url, "sim-secret")
        by_what = {f.what: f for f in await run_checks(load_settings())}
    assert by_what["pbx main"].detail == NO_CALL_CONTROL and not by_what["pbx main"].ok
    assert by_what["pbx main XAPI"].ok  # XAPI alone still works: ingest runs XAPI-only
    async with running_simulator(SimConfig(xapi_enabled=False)) as sim:
        _pbx_env(monkeypatch, sim.base_url, "sim-secret")
        by_what = {f.what: f for f in await run_checks(load_settings())}
    assert by_what["pbx main"].ok and by_what["pbx main XAPI"].detail == NO_XAPI


def test_the_setup_guide_documents_each_message_config_check_gives() -> None:
    """An operator reading docs/3cx-setup.md finds the very words the check printed, next to what to do."""
    guide = (Path(__file__).resolve().parents[2] / "docs" / "3cx-setup.md").read_text()
    for message in (WRONG_CREDENTIALS, NO_CALL_CONTROL, NO_XAPI):
        assert message in guide, message
    for fragment in ("TLS certificate is not trusted", "JetStream is off", "run `masterlinc db upgrade`"):
        assert fragment in guide, fragment
