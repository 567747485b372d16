"""Rules that change without a restart: a changed file is read again (also on SIGHUP); a bad one is refused with its
line and the rules in force stay."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from agents.routing import Route, RulesSource
from hub.rules import CallContext, RuleError
from tests.helpers import eventually

pytestmark = pytest.mark.anyio

RULES = 'rules:\n  - {name: vip, match: {caller: "+1555*"}, action: {transfer: "101"}}\ndefault: {queue: "8000"}\n'
VIP = CallContext(caller="+15550100")


def source(tmp_path: Path, text: str = RULES) -> RulesSource:
    path = tmp_path / "routing.yaml"
    path.write_text(text)
    return RulesSource.from_file(path)


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    rules = source(tmp_path)
    assert rules.path is not None
    assert not rules.reload()  # nothing changed
    rules.path.write_text(RULES.replace('"101"', '"102"'))
    assert rules.reload()
    assert rules.current.decide(VIP).action == Route("transfer", "102")
    assert rules.reloads == 1


def test_a_file_saved_again_unchanged_is_not_a_reload(tmp_path: Path) -> None:
    rules = source(tmp_path)
    assert rules.path is not None
    rules.path.write_text(RULES + "\n")  # new size and time, same rules? the content differs: a reload
    assert rules.reload()
    stat = rules.path.stat()
    os.utime(rules.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # touched, same content
    assert not rules.reload()


def test_a_bad_new_file_is_refused_with_its_line_and_the_old_rules_stay(tmp_path: Path) -> None:
    rules = source(tmp_path)
    assert rules.path is not None
    rules.path.write_text(RULES.replace('{transfer: "101"}', '{teleport: "101"}'))
    assert not rules.reload()
    assert rules.rejected == 1
    assert isinstance(rules.last_error, RuleError)
    assert str(rules.last_error).startswith(f"{rules.path}:2: ") and "unknown action 'teleport'" in str(
        rules.last_error
    )
    assert rules.current.decide(VIP).action == Route("transfer", "101")  # still in force
    rules.path.write_text(RULES.replace('"101"', '"103"'))  # fixed: taken
    assert rules.reload() and rules.last_error is None


def test_a_missing_file_is_refused_and_the_rules_stay(tmp_path: Path) -> None:
    rules = source(tmp_path)
    assert rules.path is not None
    rules.path.unlink()
    assert not rules.reload(force=True)
    assert rules.last_error is not None and "cannot read the rule file" in str(rules.last_error)
    assert rules.current.decide(VIP).action == Route("transfer", "101")


async def test_the_watch_picks_up_a_change_and_sighup_forces_a_read(tmp_path: Path) -> None:
    rules = source(tmp_path)
    assert rules.path is not None
    async with rules.watching(0.05, sighup=True):
        rules.path.write_text(RULES.replace('"101"', '"102"'))
        await eventually(lambda: rules.reloads == 1, what="the watch to read the change")
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: rules.reloads == 2, what="SIGHUP to force a read")
    assert signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, signal.Handlers.SIG_DFL)  # our handler is gone
