"""Freed heap memory handed back to the OS (hub.heaptrim), measured on this process's own RSS."""

from __future__ import annotations

import asyncio
import itertools

import anyio
import pytest

from hub.heaptrim import TRIMMED, libc_trim, rss_bytes, trim_forever, trim_once

pytestmark = pytest.mark.anyio
MIB = 1024 * 1024


def test_holes_left_by_a_burst_are_given_back() -> None:
    """The shape of a backlog worked off: many malloc-sized objects, one in fifty kept, the rest freed. glibc keeps
    the freed chunks resident below the survivors until malloc_trim gives their pages back."""
    trim = libc_trim()
    if trim is None:
        pytest.skip("no glibc malloc_trim on this platform")
    trim_once(trim)  # start from a trimmed heap
    burst = [bytes(2000) + bytes(i % 7) for i in range(30_000)]  # ~60 MiB of objects over pymalloc's 512 B
    survivors = burst[::50]
    del burst
    held = rss_bytes()
    counted = TRIMMED._value.get()
    released = trim_once(trim)
    assert held is not None and len(survivors) == 600
    assert released > 30 * MIB, f"only {released / MIB:.1f} MiB given back"
    assert TRIMMED._value.get() - counted == released
    assert trim_once(trim) < 2 * MIB  # nothing much left to give


async def test_the_trim_runs_every_interval_and_stops_with_the_service() -> None:
    calls: list[float] = []
    stopping, thrice = asyncio.Event(), asyncio.Event()

    def counting() -> int:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 3:
            thrice.set()
        return 1

    task = asyncio.create_task(trim_forever(stopping, every_s=0.02, trim=counting))
    with anyio.fail_after(5):
        await thrice.wait()
    stopping.set()
    with anyio.fail_after(1):
        await task  # returns at once, not after another interval
    assert all(b - a >= 0.015 for a, b in itertools.pairwise(calls))
