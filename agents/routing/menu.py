"""Playing a DTMF menu on a route-point leg: the prompt, the caller's key, timeouts, invalid keys and re-prompts.

One play of the prompt is one attempt. A key pressed while a prompt plays stops it (the writer's queue is cleared)
and counts at once. After the prompt has played (including what the PBX still buffers), the caller has
``timeout_s`` to press a key; silence means the prompt is played again. A key that is not an option plays the
``invalid`` prompt (when there is one) and then the menu again. After ``attempts`` plays without a valid key, the
menu's ``otherwise`` action applies. The leg going away (hang-up, transfer) ends the menu with no action.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from agents.routing.prompts import Prompt
from agents.routing.rules import Action, Menu
from hub.audio.writer import PacedWriter


class PromptOutput(Protocol):
    """Where prompts go: :class:`hub.audio.ParticipantStream` (the leg's outgoing stream); ``ended`` when the leg
    is gone."""

    ended: asyncio.Event

    @property
    def writer(self) -> PacedWriter: ...


@dataclass(frozen=True)
class MenuResult:
    action: Action | None  # None: the leg went away, or no valid key and no `otherwise`
    digit: str | None
    plays: int
    invalid: int
    timeouts: int
    reason: str


async def run_menu(menu: Menu, out: PromptOutput, digits: asyncio.Queue[str]) -> MenuResult:
    plays = invalid = timeouts = 0
    while plays < menu.attempts:
        plays += 1
        digit = await play(out, menu.prompt, digits)
        if digit is None and not out.ended.is_set():
            digit = await _first(digits.get(), out.ended, asyncio.sleep(menu.timeout_s))
        if out.ended.is_set() and digit is None:
            return MenuResult(None, None, plays, invalid, timeouts, "the leg went away during the menu")
        if digit is None:
            timeouts += 1
            continue
        action = menu.options.get(digit)
        if action is not None:
            return MenuResult(action, digit, plays, invalid, timeouts, f"key {digit} in menu {menu.name}")
        invalid += 1
        if menu.invalid is not None and plays < menu.attempts:
            await play(out, menu.invalid, digits, interruptible=False)
    why = f"no valid key in menu {menu.name} after {plays} plays ({timeouts} timed out, {invalid} invalid)"
    return MenuResult(menu.otherwise, None, plays, invalid, timeouts, why)


async def play(
    out: PromptOutput, prompt: Prompt, digits: asyncio.Queue[str], *, interruptible: bool = True
) -> str | None:
    """Play ``prompt`` to its end (the PBX's buffer included); a key pressed meanwhile stops it and is returned."""
    if interruptible and not digits.empty():
        return digits.get_nowait()
    writer = out.writer
    writer.write(prompt.pcm)
    writer.flush()

    async def played_out() -> None:
        await writer.drained.wait()
        await asyncio.sleep(writer.ahead_ms / 1000)  # what the far end still has to play

    if not interruptible:
        await _first(played_out(), out.ended)
        return None
    digit = await _first(digits.get(), out.ended, played_out())
    if digit is not None:
        writer.clear()  # barge-in: the rest of the prompt is dropped
    return digit


async def _first(get: Awaitable[str] | Awaitable[None], *others: asyncio.Event | Awaitable[None]) -> str | None:
    """Whichever comes first: a key from ``get`` (returned), an event set, or one of the others finishing."""
    first = asyncio.ensure_future(get)
    rest = [asyncio.ensure_future(o.wait() if isinstance(o, asyncio.Event) else o) for o in others]
    try:
        await asyncio.wait([first, *rest], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (first, *rest):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    if first.done() and not first.cancelled():
        result = first.result()
        return result if isinstance(result, str) else None
    return None
