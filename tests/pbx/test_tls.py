"""TLS to the PBX over real sockets (the simulator serving https/wss with a certificate from a private CA): verified
by default, so an unknown CA is refused on REST and on the websocket; ``ca_file`` trusts the PBX's own CA; and the
whole adapter syncs over it."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
import websockets

from hub.bus import connect
from hub.config import IngestConfig, PbxConfig
from hub.ingest.adapter import PbxAdapter
from hub.pbx import CallControlClient, TokenProvider
from hub.pbx.errors import PbxUnavailable
from hub.pbx.http import pbx_http, tls_context
from hub.simulator import SimHandle, running_simulator
from tests.helpers import fresh_bus

pytestmark = pytest.mark.anyio


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def sim(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[SimHandle]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain, key = tmp_path / "pbx.pem", tmp_path / "pbx.key"
    cert.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    async with running_simulator(tls=(chain, key)) as handle:
        yield handle


def _pbx(sim: SimHandle, **tls: object) -> PbxConfig:
    return PbxConfig.model_validate({"id": "main", "base_url": sim.base_url, "client_id": "800",
                                     "client_secret": "sim-secret", **tls})  # fmt: skip


async def test_rest_refuses_a_pbx_certificate_from_an_unknown_ca_by_default(sim: SimHandle) -> None:
    assert sim.base_url.startswith("https://")
    async with pbx_http(_pbx(sim)) as http:
        with pytest.raises(
            PbxUnavailable, match=r"TLS certificate is not trusted \(.*\); give its CA as the PBX.s ca_file"
        ):
            await CallControlClient(http, TokenProvider(http, "800", _pbx(sim).secret())).dns()


async def test_rest_trusts_the_pbx_s_own_ca_when_given(sim: SimHandle, ca: trustme.CA, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    pbx = _pbx(sim, ca_file=str(ca_file))
    async with pbx_http(pbx) as http:
        dns = await CallControlClient(http, TokenProvider(http, "800", pbx.secret())).dns()
    assert "800" in {d["dn"] for d in dns}


async def test_the_websocket_is_verified_the_same_way(sim: SimHandle, ca: trustme.CA, tmp_path: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        async with websockets.connect(sim.ws_url, ssl=tls_context(True, None)):
            pass
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    # past TLS, the simulator wants a token: a 401 handshake proves the certificate was accepted
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(sim.ws_url, ssl=tls_context(True, ca_file)):
            pass
    assert refused.value.response.status_code == 401


@pytest.mark.nats
async def test_the_adapter_syncs_over_tls_with_the_ca_file(nats_server: str, ca: trustme.CA, tmp_path: Path) -> None:

    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert = ca.issue_cert("127.0.0.1")
    chain, key = tmp_path / "pbx.pem", tmp_path / "pbx.key"
    cert.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    nc = await connect(nats_server, name="test-tls")
    await fresh_bus(nc.jetstream())
    async with running_simulator(tls=(chain, key)) as sim:
        pbx = _pbx(sim, ca_file=str(ca_file))
        async with pbx_http(pbx) as http:
            tokens = TokenProvider(http, pbx.client_id, pbx.secret())
            adapter = PbxAdapter(nc, pbx, CallControlClient(http, tokens), tokens, config=IngestConfig())
            stopping = asyncio.Event()
            task = asyncio.create_task(adapter.run(stopping))
            try:
                await asyncio.wait_for(adapter.synced.wait(), 10)
            finally:
                stopping.set()
                await asyncio.wait_for(task, 15)
    await nc.close()
