"""NATS authentication from settings: services connect with what BusSecurity says, and say so when refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub import natsd
from hub.bus import BusUnavailableError, connect
from hub.config import BusSecurity, Settings

pytestmark = [pytest.mark.anyio, pytest.mark.nats]


async def test_user_and_password_from_settings_reach_an_authenticating_server(tmp_path: Path) -> None:
    with natsd.running(store_dir=tmp_path, extra_args=("--user", "hub", "--pass", "s3cr3t-pass")) as server:
        settings = Settings.model_validate({"bus": {"security": {"user": "hub", "password": "s3cr3t-pass"}}})
        nc = await connect(server.url, name="test-auth", **settings.bus.security.options())
        assert nc.is_connected
        await nc.close()
        with pytest.raises(BusUnavailableError) as refused:
            await connect(server.url, name="test-no-auth")
        assert "refused this service's credentials" in str(refused.value)
        assert "s3cr3t-pass" not in str(refused.value)


async def test_a_token_from_settings_is_a_secret(tmp_path: Path) -> None:
    with natsd.running(store_dir=tmp_path, extra_args=("--auth", "tok-123456")) as server:
        security = BusSecurity.model_validate({"token": "tok-123456"})
        assert "tok-123456" not in repr(security)
        nc = await connect(server.url, name="test-token", **security.options())
        assert nc.is_connected
        await nc.close()


def test_two_ways_of_authenticating_at_once_are_refused() -> None:
    with pytest.raises(ValueError, match="give one of creds_file, nkey_seed_file, user/password or token"):
        BusSecurity.model_validate({"user": "a", "password": "b", "token": "c"})
    with pytest.raises(ValueError, match="both tls_cert_file and tls_key_file"):
        BusSecurity.model_validate({"tls_cert_file": "/tmp/cert.pem"})
