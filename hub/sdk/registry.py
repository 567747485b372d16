"""The agent registry in NATS KV (ML_AGENTS): one key per running replica, ``<agent>.<replica>``.

Each replica rewrites its record every heartbeat (name, capabilities, health, load, time of the beat). Heartbeats
live in KV only, never in the event log (D§9). A replica whose last beat is older than ``down_after`` beats is down;
a replica that stops cleanly deletes its key, so the others notice at once.

:class:`RegistryView` watches the bucket (all of it, or one agent's replicas) and answers who is up from memory.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field

from hub.bus.kv import AGENTS
from hub.bus.kvmirror import KvMirror
from schemas.common import UtcDateTime, utcnow


class AgentRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    agent: str
    replica: str
    capabilities: list[str] = Field(default_factory=list)
    version: str = ""
    health: str = "ok"
    load: int = 0
    started_at: UtcDateTime
    beat_at: UtcDateTime
    heartbeat_s: float
    down_after_beats: int = 3

    @property
    def key(self) -> str:
        return registry_key(self.agent, self.replica)

    def alive(self, now: datetime | None = None) -> bool:
        deadline = self.beat_at + timedelta(seconds=self.heartbeat_s * self.down_after_beats)
        return (now or utcnow()) <= deadline and self.health != "stopping"


def registry_key(agent: str, replica: str) -> str:
    return f"{agent}.{replica}"


class RegistryView(KvMirror[AgentRecord]):
    """Every record under a key pattern, kept current from the bucket (:class:`hub.bus.kvmirror.KvMirror`)."""

    def __init__(self, js: JetStreamContext, pattern: str = ">") -> None:
        super().__init__(js, AGENTS.name, AgentRecord.model_validate_json, pattern)

    @property
    def records(self) -> dict[str, AgentRecord]:
        return {key: record for key, (record, _revision) in self.values.items()}

    def alive(self, agent: str | None = None, now: datetime | None = None) -> list[AgentRecord]:
        at = now or utcnow()
        return sorted(
            (r for r in self.records.values() if (agent is None or r.agent == agent) and r.alive(at)),
            key=lambda r: r.replica,
        )

    def is_up(self, agent: str) -> bool:
        return bool(self.alive(agent))


class Heartbeat:
    """Writes one replica's record every ``heartbeat_s`` seconds; deletes it on stop."""

    def __init__(self, kv: KeyValue, record: AgentRecord) -> None:
        self._kv = kv
        self.record = record

    async def beat(self, *, load: int | None = None, health: str | None = None) -> None:
        update: dict[str, object] = {"beat_at": utcnow()}
        if load is not None:
            update["load"] = load
        if health is not None:
            update["health"] = health
        self.record = self.record.model_copy(update=update)
        await self._kv.put(self.record.key, self.record.model_dump_json().encode())

    async def remove(self) -> None:
        with contextlib.suppress(Exception):
            await self._kv.delete(self.record.key)
