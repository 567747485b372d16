"""Simulator configuration: the PBX topology, and every fact 3CX's reference marks unverified as an option.

| option | default | what 3CX is reported to do |
|---|---|---|
| ``finalstatus`` | ``"string"`` | CallControlResultResponse.finalstatus: "Success" or a number (1/0/-1) |
| ``sequence`` | ``"per_connection"`` | websocket ``sequence``: per connection, ``global``, or with ``gaps`` |
| ``repeat_upserts_s`` | ``None`` | 3CX repeats Upserts for live participants about every 0.75 s (None: off) |
| ``new_token_revokes_old`` | ``True`` | one active token per client: a new grant revokes the previous one |
| ``route_point_inbound_connected`` | ``True`` | inbound legs on the route point arrive Connected |
| ``actions_need_json`` | ``"reject"`` | actions without a JSON body: ``reject`` (415) or ``ignore`` (nothing happens) |
| ``park_orbits``, ``pickup_code`` | ``SP0..SP9``, ``*4`` | park = transferto an orbit; resume = dial code + orbit |
| ``stream_before_connected`` | ``424`` | ``/stream`` before the leg is Connected: 404 or 424 (both reported) |
| ``stream_scope`` | ``"route_point"`` | which legs may ``/stream``: the route point's, or any visible (``monitored``) |
| ``stream_chunk_bytes`` | ``320`` | GET chunk size (3CX's are arbitrary, possibly odd) |
| ``post_audio_needs_chunked`` | ``True`` | a POSTed stream that is not chunked is accepted and silently discarded |
| ``playout_max_ahead_ms`` | ``None`` | audio arriving further ahead than this is dropped (None: any lead is fine) |
| ``revoked_token_ends_streams`` | ``False`` | a token revoked (new grant or fault) ends the streams opened with it |
| ``revoked_token_closes_websocket`` | ``False`` | a token revoked closes the websocket opened with it (unknown) |
| ``profile_names`` | Available, Away, Out of office, Custom 1, Custom 2 | each user's forwarding profile names |
| ``strict_profile_names`` | ``True`` | PATCH CurrentProfileName must name one of them (else 400) |
| ``xapi_role`` | ``"system_owner"`` | ``system_admin`` gets 403 on CallHistoryView (observed) |
| ``call_control_enabled``, ``xapi_enabled`` | ``True`` | the integration's API checkboxes (off: 403, unlicensed) |

Audio measurement (D§11, not 3CX facts): ``silence_threshold`` (peak sample value that still counts as silence),
``utterance_gap_ms`` (loud audio further apart starts a new reply utterance), ``underrun_ms`` (40). ``clock_speed``
runs simulated time faster than real time (scenarios without audio).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ExtensionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dn: str
    name: str = ""
    direct_control: bool = False
    monitored: bool = True
    user_agent: str = "Yealink SIP-T54W 96.86.0.70"
    device_id: str | None = None  # default sip:<dn>@<device_host>:5<dn>
    # XAPI user (reference §5.2): presence and the few identity fields the hub reads
    user_id: int | None = None  # default: 1, 2, ... in the order of ``extensions``
    email: str = ""
    mobile: str = ""
    registered: bool = True
    profile: str = "Available"
    queue_status: Literal["LoggedIn", "LoggedOut"] = "LoggedIn"
    record_calls: bool = False


class SimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str = "800"
    client_secret: str = "sim-secret"  # noqa: S105 - the simulator's own test credential
    extensions: tuple[ExtensionConfig, ...] = (
        ExtensionConfig(dn="100", name="Reception", direct_control=True),
        ExtensionConfig(dn="101", name="Alice"),
        ExtensionConfig(dn="102", name="Bob"),
        ExtensionConfig(dn="103", name="Carol", monitored=False),
    )
    queues: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: {"8000": tuple[str, ...](("101", "102"))},
        description="queue DN -> member extensions; a call to a queue rings every member, the first to answer wins",
    )
    park_orbits: tuple[str, ...] = tuple(f"SP{i}" for i in range(10))
    pickup_code: str = "*4"
    device_host: str = "127.0.0.1"
    token_lifetime_s: int = Field(default=3600, ge=1)
    finalstatus: Literal["string", "number"] = "string"
    sequence: Literal["per_connection", "global", "gaps"] = "per_connection"
    repeat_upserts_s: float | None = Field(default=None, gt=0)
    new_token_revokes_old: bool = True
    route_point_inbound_connected: bool = True
    actions_need_json: Literal["reject", "ignore"] = "reject"
    seed: int = 0  # random choices (sequence gaps) repeat run after run
    first_participant_id: int = Field(default=1, ge=1)
    first_callid: int = Field(default=1, ge=1)
    first_legid: int = Field(default=1, ge=1)
    # audio (reference §4)
    stream_before_connected: Literal[404, 424] = 424
    stream_scope: Literal["route_point", "monitored"] = "route_point"
    stream_chunk_bytes: int = Field(default=320, ge=1, le=65536)
    post_audio_needs_chunked: bool = True
    playout_max_ahead_ms: float | None = Field(default=None, gt=0)
    revoked_token_ends_streams: bool = False
    revoked_token_closes_websocket: bool = False
    silence_threshold: int = Field(default=64, ge=0, le=32767)
    utterance_gap_ms: float = Field(default=1000.0, gt=0)
    underrun_ms: float = Field(default=40.0, ge=0)
    # XAPI (reference §5)
    call_control_enabled: bool = True
    xapi_enabled: bool = True
    xapi_role: Literal["system_owner", "system_admin"] = "system_owner"
    profile_names: tuple[str, ...] = ("Available", "Away", "Out of office", "Custom 1", "Custom 2")
    strict_profile_names: bool = True
    clock_speed: float = Field(default=1.0, gt=0)

    def extension(self, dn: str) -> ExtensionConfig | None:
        return next((e for e in self.extensions if e.dn == dn), None)

    def user_ids(self) -> dict[str, int]:
        """Extension -> XAPI user id (configured, else 1, 2, ... skipping configured ones)."""
        taken = {e.user_id for e in self.extensions if e.user_id is not None}
        free = (i for i in range(1, 1 + 2 * len(self.extensions) + len(taken)) if i not in taken)
        return {e.dn: e.user_id if e.user_id is not None else next(free) for e in self.extensions}

    def visible(self, dn: str) -> bool:
        """The API sees only its route point and the monitored extensions."""
        if dn == self.client_id:
            return True
        ext = self.extension(dn)
        return ext is not None and ext.monitored
