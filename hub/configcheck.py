"""``masterlinc config check``: validate everything and explain each problem with what to do.

Each check returns a line: ok, or the problem and the fix. Network checks are bounded (a few seconds each) and
never print a secret.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from hub.bus import BusUnavailableError, ServerTooOldError, connect
from hub.config import PbxConfig, Settings
from hub.eventlog import EventStore, StoreNotMigrated, StoreUnavailable
from hub.pbx.errors import PbxError, PbxUnauthorized
from hub.pbx.token import TokenProvider

WRONG_CREDENTIALS = (
    "the PBX refused the client id or secret: copy them from Admin > Integrations > API "
    "(the secret is shown once; recreate the integration if lost)"
)
NO_CALL_CONTROL = (
    "Call Control is not available: it needs an Enterprise licence and the '3CX Call Control API Access' box "
    "on the API integration"
)


@dataclass(frozen=True)
class Finding:
    what: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.what}: {self.detail}"


async def check_bus(settings: Settings) -> Finding:
    if settings.nats_url is None:
        return Finding("bus", True, "NATS_URL unset: `masterlinc up` starts an embedded nats-server")
    try:
        nc = await connect(
            settings.nats_url, name="masterlinc-config-check", connect_timeout=2, **settings.bus.security.options()
        )
    except ServerTooOldError as exc:
        return Finding("bus", False, str(exc))
    except BusUnavailableError as exc:
        return Finding("bus", False, f"{exc}; is nats-server running with -js, and is NATS_URL right?")
    version = nc.connected_server_version._server_version
    jetstream = True
    try:
        await nc.jetstream().account_info()
    except Exception:  # any failure here means the same thing to the operator
        jetstream = False
    await nc.close()
    if not jetstream:
        return Finding("bus", False, f"NATS {version} answers but JetStream is off: start nats-server with -js")
    return Finding("bus", True, f"NATS {version} with JetStream at {settings.nats_url}")


async def check_database(settings: Settings) -> Finding:
    url = settings.effective_database_url()
    shown = url.split("@")[-1]
    try:
        store = await EventStore.open(url)
    except StoreNotMigrated:
        return Finding("event log", False, f"{shown} has no tables yet: run `masterlinc db upgrade`")
    except StoreUnavailable as exc:
        return Finding(
            "event log", False, f"{shown} is unreachable ({exc}); check DATABASE_URL and that the server runs"
        )
    await store.close()
    return Finding("event log", True, shown)


NO_XAPI = (
    "XAPI answers 403: tick '3CX Configuration API Access' on the API integration (with a role; call history "
    "needs System Owner); until then presence, chat, call history and set_presence are off"
)


async def check_pbx(pbx: PbxConfig) -> list[Finding]:
    """Call Control (live calls), then XAPI (configuration): each says what to fix."""
    findings = [await _check_call_control(pbx)]
    if findings[0].ok or findings[0].detail == NO_CALL_CONTROL:
        findings.append(await _check_xapi(pbx))
    return findings


async def _check_xapi(pbx: PbxConfig) -> Finding:
    what = f"pbx {pbx.id} XAPI"
    verify: bool | str = str(pbx.ca_file) if pbx.ca_file else pbx.verify_tls
    try:
        async with httpx.AsyncClient(base_url=pbx.base_url, verify=verify, timeout=5.0) as http:
            token = await TokenProvider(http, pbx.client_id, pbx.secret()).token()
            response = await http.get("/xapi/v1/Users", params={"$top": "1", "$select": "Id"},
                                      headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    except (httpx.HTTPError, PbxError, ValueError) as exc:
        return Finding(what, False, f"could not be checked: {exc}")
    if response.status_code == 403:
        return Finding(what, False, NO_XAPI)
    if response.status_code != 200:
        return Finding(what, False, f"GET /xapi/v1/Users answered {response.status_code}")
    return Finding(what, True, "users, presence, call history and chat readable")


async def _check_call_control(pbx: PbxConfig) -> Finding:
    what = f"pbx {pbx.id}"
    try:
        secret = pbx.secret()
    except ValueError as exc:
        return Finding(what, False, str(exc))
    verify: bool | str = str(pbx.ca_file) if pbx.ca_file else pbx.verify_tls
    try:
        async with httpx.AsyncClient(base_url=pbx.base_url, verify=verify, timeout=5.0) as http:
            tokens = TokenProvider(http, pbx.client_id, secret)
            try:
                token = await tokens.token()
            except PbxUnauthorized:
                return Finding(what, False, WRONG_CREDENTIALS)
            except PbxError as exc:
                return Finding(what, False, f"{pbx.base_url} did not answer the token request ({exc}); check base_url")
            response = await http.get("/callcontrol", headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        return Finding(what, False, f"{pbx.base_url} is unreachable ({type(exc).__name__}); check base_url and TLS")
    if response.status_code in (403, 404):
        return Finding(what, False, NO_CALL_CONTROL)
    if response.status_code != 200:
        return Finding(what, False, f"GET /callcontrol answered {response.status_code}")
    dns = response.json()
    route_points = [d["dn"] for d in dns if d.get("type") == "Wroutepoint"]
    return Finding(what, True, f"token ok; {len(dns)} DN(s) visible, route point {', '.join(route_points) or 'none'}")


async def run_checks(settings: Settings) -> list[Finding]:
    findings = [await check_bus(settings), await check_database(settings)]
    for pbx in settings.pbxs:
        findings += await check_pbx(pbx)
    if not settings.pbxs:
        findings.append(Finding("pbx", True, "none configured: `masterlinc up` uses the built-in simulator"))
    return findings
