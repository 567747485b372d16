"""A DTMF menu against a paced writer drained like the PBX's playout: barge-in, timeouts, invalid keys, attempts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from agents.routing import Menu, Route, run_menu, tone_prompt
from agents.routing.prompts import Prompt
from hub.audio.format import BYTES_PER_MS
from hub.audio.writer import PacedWriter

pytestmark = pytest.mark.anyio

SALES, SUPPORT, OPERATOR = Route("queue", "8000"), Route("transfer", "102"), Route("transfer", "100")


class Leg:
    """What a leg's outgoing stream does with the writer: plays its frames in real time (lead 40 ms)."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()
        self.writer = PacedWriter(lead_ms=40)
        self.heard = bytearray()

    @contextlib.asynccontextmanager
    async def playing(self) -> AsyncIterator[Leg]:
        async def drain() -> None:
            async for frame in self.writer.frames():
                self.heard += frame

        task = asyncio.create_task(drain())
        try:
            yield self
        finally:
            self.writer.cancel()
            await task

    def loud_ms(self) -> float:
        frames = [self.heard[i : i + 320] for i in range(0, len(self.heard), 320)]
        return 20.0 * sum(1 for f in frames if any(f))


def menu(attempts: int = 3, invalid: Prompt | None = None, timeout_s: float = 0.15) -> Menu:
    return Menu(
        name="main",
        prompt=tone_prompt(440, 200),
        options={"1": SALES, "2": SUPPORT},
        otherwise=OPERATOR,
        invalid=invalid,
        timeout_s=timeout_s,
        attempts=attempts,
    )


async def press(keys: asyncio.Queue[str], digit: str, after_s: float) -> None:
    await asyncio.sleep(after_s)
    keys.put_nowait(digit)


async def test_a_key_after_the_prompt_chooses_its_option() -> None:
    keys: asyncio.Queue[str] = asyncio.Queue()
    async with Leg().playing() as leg:
        presser = asyncio.create_task(press(keys, "2", 0.3))
        result = await run_menu(menu(), leg, keys)
        await presser
    assert (result.action, result.digit, result.plays, result.timeouts) == (SUPPORT, "2", 1, 0)
    assert 180 <= leg.loud_ms() <= 220  # the whole prompt was heard


async def test_a_key_during_the_prompt_stops_it() -> None:
    keys: asyncio.Queue[str] = asyncio.Queue()
    long = Menu(name="main", prompt=tone_prompt(440, 2000), options={"1": SALES}, otherwise=None, timeout_s=1)
    async with Leg().playing() as leg:
        presser = asyncio.create_task(press(keys, "1", 0.3))
        result = await run_menu(long, leg, keys)
        await presser
    assert result.action == SALES
    assert leg.writer.queued_ms == 0 and leg.writer.cleared_ms > 1000  # the rest of the prompt was dropped
    assert leg.loud_ms() < 600


async def test_silence_plays_the_prompt_again_then_the_otherwise_route() -> None:
    keys: asyncio.Queue[str] = asyncio.Queue()
    async with Leg().playing() as leg:
        result = await run_menu(menu(attempts=3), leg, keys)
    assert (result.action, result.plays, result.timeouts, result.invalid) == (OPERATOR, 3, 3, 0)
    assert 560 <= leg.loud_ms() <= 640  # three plays of 200 ms
    assert "after 3 plays (3 timed out, 0 invalid)" in result.reason


async def test_a_wrong_key_plays_the_invalid_prompt_then_the_menu_again() -> None:
    keys: asyncio.Queue[str] = asyncio.Queue()
    keys.put_nowait("9")  # pressed before the menu even began
    async with Leg().playing() as leg:
        presser = asyncio.create_task(press(keys, "1", 0.55))  # in the silence after the second play
        result = await run_menu(menu(invalid=tone_prompt(300, 100), timeout_s=0.5), leg, keys)
        await presser
    assert (result.action, result.plays, result.invalid) == (SALES, 2, 1)
    assert leg.loud_ms() >= 280  # the invalid prompt (100 ms) and the second play (200 ms)


async def test_a_leg_that_goes_away_ends_the_menu_without_a_route() -> None:
    keys: asyncio.Queue[str] = asyncio.Queue()
    async with Leg().playing() as leg:
        asyncio.get_running_loop().call_later(0.1, leg.ended.set)
        result = await run_menu(menu(timeout_s=5), leg, keys)
    assert result.action is None and "went away" in result.reason


def test_a_tone_prompt_has_its_length() -> None:
    prompt = tone_prompt(440, 250)
    assert len(prompt.pcm) == 250 * BYTES_PER_MS
