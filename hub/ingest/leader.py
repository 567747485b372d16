"""One active adapter per PBX (D§2): a leader lease in KV (``ML_LEADERS``, key = pbx id).

The value is ``{"holder", "epoch", "until"}``. A process becomes leader by creating the key (epoch 1) or, once the
holder's ``until`` has passed, by a compare-and-set that increments the epoch; the leader renews with
compare-and-set every third of the lease. A leader that cannot renew before ``until`` stops acting on its own
(:meth:`LeaderLease.valid` turns false), so two processes never publish for one PBX at once, as long as their clocks
agree to within the lease (one host or NTP). The epoch orders events across takeovers (``seq`` = (epoch, counter)).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from hub.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Lease:
    holder: str
    epoch: int
    until: float
    revision: int


class LeaderLease:
    def __init__(
        self,
        kv: KeyValue,
        pbx_id: str,
        holder: str,
        *,
        lease_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._kv = kv
        self.pbx_id = pbx_id
        self.holder = holder
        self.lease_s = lease_s
        self._clock = clock
        self.current: Lease | None = None

    @property
    def epoch(self) -> int:
        return self.current.epoch if self.current else 0

    def valid(self) -> bool:
        """True while this process holds an unexpired lease."""
        return self.current is not None and self._clock() < self.current.until

    async def _read(self) -> Lease | None:
        try:
            entry = await self._kv.get(self.pbx_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        raw = json.loads(entry.value)
        return Lease(str(raw["holder"]), int(raw["epoch"]), float(raw["until"]), int(entry.revision or 0))

    def _value(self, epoch: int) -> tuple[bytes, float]:
        until = self._clock() + self.lease_s
        return json.dumps({"holder": self.holder, "epoch": epoch, "until": until}).encode(), until

    async def try_acquire(self) -> bool:
        """Become or stay leader if the lease is free, expired or ours. Never raises for a lost race."""
        held = await self._read()
        if held is None:
            value, until = self._value(1)
            try:
                revision = await self._kv.create(self.pbx_id, value)
            except KeyWrongLastSequenceError:  # another process created it first
                return False
            self.current = Lease(self.holder, 1, until, revision)
            log.info("leader", pbx=self.pbx_id, holder=self.holder, epoch=1)
            return True
        mine = held.holder == self.holder and self.current is not None and held.epoch == self.current.epoch
        if not mine and self._clock() < held.until:
            self.current = None
            return False
        epoch = held.epoch if mine else held.epoch + 1
        value, until = self._value(epoch)
        try:
            revision = await self._kv.update(self.pbx_id, value, last=held.revision)
        except KeyWrongLastSequenceError:
            self.current = None
            return False
        if not mine:
            log.info("leader", pbx=self.pbx_id, holder=self.holder, epoch=epoch, took_over_from=held.holder)
        self.current = Lease(self.holder, epoch, until, revision)
        return True

    async def release(self) -> None:
        """Give the lease up at a clean stop, so a standby takes over at once."""
        if self.current is None:
            return
        value = json.dumps({"holder": self.holder, "epoch": self.current.epoch, "until": 0}).encode()
        try:
            await self._kv.update(self.pbx_id, value, last=self.current.revision)
        except Exception as exc:
            log.debug("lease release failed", error=str(exc) or type(exc).__name__)
        self.current = None
