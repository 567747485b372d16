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

    def extension(self, dn: str) -> ExtensionConfig | None:
        return next((e for e in self.extensions if e.dn == dn), None)

    def visible(self, dn: str) -> bool:
        """The API sees only its route point and the monitored extensions."""
        if dn == self.client_id:
            return True
        ext = self.extension(dn)
        return ext is not None and ext.monitored
