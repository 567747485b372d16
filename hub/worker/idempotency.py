"""Idempotency per issuer and in-flight markers (D§8), kept in NATS KV so every worker sees them.

One KV entry per (issuer, idempotency key), created atomically (``create`` fails when it exists), so two workers that
receive the same command race on the PBX at most once: the loser sees the winner's entry.

Entry states:
- ``inflight``: a worker claimed the command and may be calling the PBX now. A worker that finds an in-flight entry
  older than its deadline (plus a grace) takes it over: it reconciles by reading PBX state, else fails the command
  with ``outcome_unknown`` — never a second PBX call.
- ``done``: the result is stored; the same key returns it (``duplicate``), a different payload under the same key is
  an ``idempotency_conflict``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from hub.bus.kv import create
from schemas.commands import CommandBase, CommandResult


class ClaimOutcome(StrEnum):
    NEW = "new"  # this worker owns the command: call the PBX
    DONE = "done"  # a result exists for the same payload: return it
    CONFLICT = "conflict"  # same key, different payload
    IN_PROGRESS = "in_progress"  # another live worker is on it
    ABANDONED = "abandoned"  # an in-flight marker whose worker is gone: reconcile, never call twice


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    key: str
    revision: int
    entry: dict[str, Any]

    @property
    def result(self) -> CommandResult | None:
        raw = self.entry.get("result")
        return CommandResult.model_validate(raw) if raw else None


def payload_fingerprint(command: CommandBase) -> str:
    """What makes two commands "the same": type, target and arguments, not ids or timestamps."""
    body = command.model_dump(
        mode="json", by_alias=True, exclude={"command_id", "issued_at", "deadline", "correlation_id", "idempotency_key"}
    )
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def entry_key(issuer: str, idempotency_key: str) -> str:
    """KV keys allow a narrow alphabet: hash the pair (issuers and keys are client-given text)."""
    return hashlib.sha256(f"{issuer}\x1f{idempotency_key}".encode()).hexdigest()[:40]


class IdempotencyStore:
    def __init__(self, kv: KeyValue, *, grace_s: float = 5.0) -> None:
        self._kv = kv
        self._grace_s = grace_s

    async def claim(self, command: CommandBase, worker: str) -> Claim:
        key = entry_key(command.issued_by, command.effective_idempotency_key)
        fingerprint = payload_fingerprint(command)
        entry = {
            "state": "inflight",
            "command_id": command.command_id,
            "fingerprint": fingerprint,
            "worker": worker,
            "started": time.time(),
            "deadline": command.deadline.timestamp(),
        }
        try:
            revision = await create(self._kv, key, json.dumps(entry).encode())
            return Claim(ClaimOutcome.NEW, key, revision, entry)
        except KeyWrongLastSequenceError:
            pass
        existing = await self._kv.get(key)
        current: dict[str, Any] = json.loads(existing.value or b"{}")
        revision = existing.revision or 0
        if current.get("fingerprint") != fingerprint:
            return Claim(ClaimOutcome.CONFLICT, key, revision, current)
        if current.get("state") == "done":
            return Claim(ClaimOutcome.DONE, key, revision, current)
        if time.time() > float(current.get("deadline", 0)) + self._grace_s:
            taken = dict(current, worker=worker, taken_over=True)
            try:
                revision = await self._kv.update(key, json.dumps(taken).encode(), last=revision)
            except KeyWrongLastSequenceError:  # someone else took it over first
                return Claim(ClaimOutcome.IN_PROGRESS, key, revision, current)
            return Claim(ClaimOutcome.ABANDONED, key, revision, taken)
        return Claim(ClaimOutcome.IN_PROGRESS, key, revision, current)

    async def complete(self, claim: Claim, result: CommandResult) -> None:
        """Store the result; the entry keeps the fingerprint so later duplicates and conflicts are recognised."""
        done = dict(claim.entry, state="done", result=result.model_dump(mode="json"), finished=time.time())
        await self._kv.put(claim.key, json.dumps(done).encode())

    async def release(self, claim: Claim) -> None:
        """Forget a claim that never reached the PBX (refused before the call), so a retry may run."""
        await self._kv.delete(claim.key)
