"""Routing rules that change without a restart: the file is watched (size, mtime and content) and re-read on SIGHUP.

A new file that does not validate is refused with its line (logged, and kept in ``last_error``); the rules in force
stay. Calls already being routed keep the rules they were decided with.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from agents.routing.rules import RoutingRules
from hub.logs import get_logger
from hub.rules import RuleError

log = get_logger(__name__)


class RulesSource:
    """The rules in force, and where they come from (a file, or a fixed set when ``path`` is None)."""

    def __init__(self, rules: RoutingRules, path: Path | None = None) -> None:
        self.current = rules
        self.path = path
        self.reloads = 0
        self.rejected = 0
        self.last_error: RuleError | None = None
        self._seen = self._signature()
        self._digest = self._content_digest()

    @classmethod
    def from_file(cls, path: Path) -> RulesSource:
        """Load ``path`` (RuleError with the line when it is invalid)."""
        return cls(RoutingRules.load(path), path)

    def _signature(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def _content_digest(self) -> str | None:
        if self.path is None:
            return None
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def reload(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed (or ``force``). True when new rules are in force."""
        if self.path is None:
            return False
        signature = self._signature()
        if not force and signature == self._seen:
            return False
        self._seen = signature
        digest = self._content_digest()
        if not force and digest == self._digest:
            return False  # touched, not changed
        self._digest = digest
        try:
            rules = RoutingRules.load(self.path)
        except RuleError as exc:
            self.rejected += 1
            self.last_error = exc
            log.error("routing rules refused; the rules in force stay", error=str(exc), kept=self.current.source)
            return False
        self.current = rules
        self.reloads += 1
        self.last_error = None
        log.info("routing rules reloaded", source=str(self.path), rules=len(rules.rules.rules), menus=len(rules.menus))
        return True

    @contextlib.asynccontextmanager
    async def watching(self, interval_s: float = 1.0, *, sighup: bool = False) -> AsyncIterator[RulesSource]:
        """Re-read the file when it changes (checked every ``interval_s``) and, with ``sighup``, on SIGHUP."""
        if self.path is None:
            yield self
            return
        poke = asyncio.Event()
        loop = asyncio.get_running_loop()
        if sighup:
            loop.add_signal_handler(signal.SIGHUP, poke.set)

        async def watch() -> None:
            while True:
                forced = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(poke.wait(), interval_s)
                    forced = True
                poke.clear()
                self.reload(force=forced)

        task = asyncio.create_task(watch(), name="routing-rules-watch")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if sighup:
                loop.remove_signal_handler(signal.SIGHUP)
