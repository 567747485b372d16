"""Pending assignments in NATS KV (ML_ASSIGN, key ``<pbx>.<call_id>``): who must claim a call, and by when.

Created atomically (one assignment per call, however many coordinator replicas or redeliveries see the call), moved
on by compare-and-set (exactly one coordinator escalates), deleted once the call is claimed or ends.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from hub.bus.kv import create
from schemas.common import LegRef, UtcDateTime

_WRONG_REVISION = (10071, 10164)


class Assignment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    pbx_id: str
    call_id: str
    rule: str
    candidates: tuple[str, ...]
    index: int = 0  # the candidate now asked to claim
    attempt: int = 1
    claim_by: UtcDateTime
    leg: LegRef | None = None
    safe_route: str | None = None
    trigger: uuid.UUID  # the event that started it: later ids derive from it
    state: Literal["pending", "routed"] = "pending"

    @property
    def agent(self) -> str | None:
        return self.candidates[self.index] if self.index < len(self.candidates) else None


@dataclass(frozen=True)
class Stored:
    value: Assignment
    revision: int


class AssignmentChanged(Exception):
    """Another coordinator (or the call's end) changed the assignment first."""


def assignment_key(pbx_id: str, call_id: str) -> str:
    return f"{pbx_id}.{call_id}"


class AssignmentStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def create(self, assignment: Assignment) -> Stored | None:
        """None when the call already has an assignment."""
        try:
            revision = await create(
                self.kv, assignment_key(assignment.pbx_id, assignment.call_id), assignment.model_dump_json().encode()
            )
        except KeyWrongLastSequenceError:
            return None
        return Stored(assignment, revision)

    async def get(self, pbx_id: str, call_id: str) -> Stored | None:
        try:
            entry = await self.kv.get(assignment_key(pbx_id, call_id))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return Stored(Assignment.model_validate_json(entry.value), entry.revision or 0)

    async def swap(self, stored: Stored, value: Assignment) -> Stored:
        try:
            revision = await self.kv.update(
                assignment_key(value.pbx_id, value.call_id), value.model_dump_json().encode(), last=stored.revision
            )
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            raise AssignmentChanged(value.call_id) from None
        return Stored(value, revision)

    async def delete(self, pbx_id: str, call_id: str, revision: int | None = None) -> bool:
        try:
            await self.kv.delete(assignment_key(pbx_id, call_id), last=revision)
        except APIError as exc:
            if exc.err_code in _WRONG_REVISION:
                return False
            raise
        return True
