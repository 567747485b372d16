"""What a CRM target is, and how its failures read.

    DeliveryError               the target did not take the record (message says why; never a secret)
    ├── retryable=True          try again later (after ``retry_after_s`` when the target said so)
    └── retryable=False         the target refused the record itself: retrying cannot help

``maybe_sent`` says this attempt may have acted although the answer was lost (a timeout after the request went out):
the outbox keeps when (``Attempt.maybe_sent_at``), and the next attempt must find what was made before making it
again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from agents.crm.record import CallRecord


class DeliveryError(Exception):
    def __init__(
        self, message: str, *, retryable: bool, retry_after_s: float | None = None, maybe_sent: bool = False
    ) -> None:
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.maybe_sent = maybe_sent
        super().__init__(message)


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt of a record version to a target."""

    number: int  # 1 for the first
    external_id: str | None  # what this target called the record before (a later version updates it)
    maybe_sent_at: datetime | None  # when an earlier attempt whose outcome is unknown began


@dataclass(frozen=True)
class Delivered:
    external_id: str | None = None


class RemoteTarget(Protocol):
    """A target outside the hub's database (a webhook, HubSpot)."""

    name: str

    async def deliver(self, record: CallRecord, attempt: Attempt) -> Delivered: ...


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds form; an HTTP date is not trusted), when sane (0-3600)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 3600 else None
