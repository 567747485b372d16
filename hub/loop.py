"""The event loop a service runs on: uvloop where it is installed (Linux, macOS), else asyncio's own.

The PBX worker spends its CPU in small socket reads and writes (NATS, HTTP to the PBX) and in callbacks; uvloop's
loop and transports cut its CPU per command by about a sixth (docs/architecture.md, "Worker throughput").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's ``new_event_loop``, or None (asyncio's default) where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """Like :func:`asyncio.run`, on the loop :func:`loop_factory` picks."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
