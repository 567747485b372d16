"""Value objects shared by events, commands and queries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from schemas.tokens import Token

_ZERO = timedelta(0)


def _utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC (SQLite returns them naive); aware ones are converted to UTC.

    Already-UTC values only get their tzinfo swapped: ``astimezone`` through pydantic's own tzinfo costs ~6 us, and
    the recorder validates two datetimes per event.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if value.tzinfo is UTC:
        return value
    if value.utcoffset() == _ZERO:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_utc)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Model(BaseModel):
    """Base for every contract model: immutable, unknown fields rejected, so typos fail loudly."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class LegRef(Model):
    """One leg of a call on the PBX: the monitored DN, the participant id (used in URLs) and the leg id.

    3CX participant ids are small integers reused over time, so a leg is only meaningful together with a call_id.
    """

    dn: Token
    participant_id: int = Field(ge=0)
    legid: int | None = Field(default=None, ge=0)

    @property
    def key(self) -> str:
        return f"{self.dn}:{self.participant_id}:{self.legid if self.legid is not None else ''}"


class CallSeq(Model):
    """Per-call order of adapter events: (leader epoch, counter), compared as a tuple (D§2)."""

    epoch: int = Field(ge=0)
    counter: int = Field(ge=0)

    def as_tuple(self) -> tuple[int, int]:
        return (self.epoch, self.counter)


class LegStatus(StrEnum):
    """The only participant statuses 3CX V20 reports (there is no Held status)."""

    DIALING = "Dialing"
    RINGING = "Ringing"
    CONNECTED = "Connected"


class Participant(Model):
    """What the hub read of a 3CX participant, in the hub's names."""

    dn: str
    participant_id: int
    legid: int | None = None
    status: str
    party_dn: str = ""
    party_caller_id: str = ""
    party_caller_name: str = ""
    party_did: str = ""
    party_dn_type: str = "None"
    device_id: str = ""
    direct_control: bool = False
    originated_by_dn: str = ""
    referred_by_dn: str = ""
    on_behalf_of_dn: str = ""


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"
    UNKNOWN = "unknown"


class ErrorCode(StrEnum):
    """Command and query error codes (D§7)."""

    NOT_FOUND = "not_found"
    INVALID_STATE = "invalid_state"
    NOT_SUPPORTED = "not_supported"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    PBX_UNAVAILABLE = "pbx_unavailable"
    INVALID_ARGUMENT = "invalid_argument"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    OUTCOME_UNKNOWN = "outcome_unknown"
    POLICY_DENIED = "policy_denied"


RETRYABLE_CODES = frozenset({ErrorCode.RATE_LIMITED, ErrorCode.PBX_UNAVAILABLE})


class CommandError(Model):
    """Why a command or query failed: a code, a message for people, and the PBX's own reason text when it gave one."""

    code: ErrorCode
    message: str
    pbx_reason: str | None = None

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES
