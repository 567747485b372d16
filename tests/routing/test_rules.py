"""Routing rules on the shared loader: caller lists (VIP, blocked), DID mapping, hours and holidays, menus, overflow,
and invalid files refused with the line and the problem (YAML and TOML), prompts included."""

from __future__ import annotations

import wave
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.routing import PlayMenu, Reject, Route, RoutingRules
from agents.routing.prompts import PromptError, load_wav
from hub.audio.format import BYTES_PER_MS
from hub.rules import CallContext, RuleError

RULES = """\
timezone: America/New_York
hours:
  mon-fri: "09:00-17:00"
holidays:
  2026-12-25: Christmas Day
lists:
  vip: ["+15550100", "+1555011*"]
  blocked: ["+1900*"]
dids:
  "+15550200": {menu: main}
  "+1555030*": {queue: "8001"}
menus:
  main:
    prompt: {tone: 440, ms: 200}
    timeout_s: 4
    attempts: 2
    options:
      "1": {queue: "8000"}
      "2": {menu: support}
      "#": {transfer: "100"}
    otherwise: {voicemail: "100"}
  support:
    options: {"1": {transfer: "102"}}
rules:
  - name: blocked
    match: {caller_list: blocked}
    action: {reject: true}
  - name: holiday
    match: {when: holiday}
    action: {voicemail: "100"}
  - name: vip
    match: {caller_list: vip, when: open}
    action: {transfer: {to: "101", overflow: "8000", after_s: 15}}
  - name: closed
    match: {when: closed}
    action: {voicemail: "100"}
default: {queue: "8000"}
fallback: "100"
"""

# 2026-11-23 is a Monday; New York is UTC-5 in November.
MON_10AM = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
MON_8PM = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
CHRISTMAS_NOON = datetime(2026, 12, 25, 17, 0, tzinfo=UTC)


@pytest.fixture
def rules() -> RoutingRules:
    return RoutingRules.parse(RULES, "routing.yaml")


@pytest.mark.parametrize(
    ("ctx", "rule", "action"),
    [
        (CallContext(caller="+19005551234", at=MON_10AM), "blocked", Reject()),
        (CallContext(caller="+15550117", at=MON_10AM), "vip", Route("transfer", "101", "8000", 15.0)),
        (CallContext(caller="+15550117", at=MON_8PM), "closed", Route("voicemail", "100")),
        (CallContext(caller="+15550117", at=CHRISTMAS_NOON), "holiday", Route("voicemail", "100")),
        (CallContext(caller="+15559999", did="+15550200", at=MON_10AM), "did +15550200", PlayMenu("main")),
        (CallContext(caller="+15559999", did="+15550301", at=MON_10AM), "did +1555030*", Route("queue", "8001")),
        (CallContext(caller="+15559999", did="+15559999", at=MON_10AM), "default", Route("queue", "8000")),
    ],
)
def test_rules_then_dids_then_the_default_decide(
    rules: RoutingRules, ctx: CallContext, rule: str, action: object
) -> None:
    decision = rules.decide(ctx)
    assert (decision.rule, decision.action) == (rule, action)


def test_menus_options_and_the_fallback_are_read(rules: RoutingRules) -> None:
    main = rules.menus["main"]
    assert (main.timeout_s, main.attempts, main.otherwise) == (4.0, 2, Route("voicemail", "100"))
    assert main.options == {"1": Route("queue", "8000"), "2": PlayMenu("support"), "#": Route("transfer", "100")}
    assert abs(main.prompt.ms - 200) < 1
    support = rules.menus["support"]
    assert (support.timeout_s, support.attempts, support.otherwise) == (5.0, 3, None)  # defaults
    assert support.prompt.label.startswith("tone")  # no prompt given: a tone
    assert rules.fallback == "100"
    assert rules.decide(CallContext(caller="+15550117", at=MON_10AM)).reason == "rule vip (line 31)"


@pytest.mark.parametrize(
    ("broken", "line", "problem"),
    [
        (RULES.replace("{reject: true}", "{reject: yes please}"), 27, "write reject: true"),
        (RULES.replace('{transfer: "100"}', '{transfer: "reception"}'), 20, "must be a number such as"),
        (RULES.replace('"2": {menu: support}', '"2": {menu: suport}'), 19, "menu 'suport' is not defined"),
        (RULES.replace('"1": {queue: "8000"}', '"12": {queue: "8000"}'), 18, "must be one key: 0-9, * or #"),
        (RULES.replace("timeout_s: 4", "timeout_s: -1"), 15, "timeout_s is seconds"),
        (RULES.replace("attempts: 2", "attempts: 0"), 16, "attempts is a whole number from 1 to 10"),
        (RULES.replace("after_s: 15", "after_s: 0"), 33, "after_s is seconds between 1 and 600"),
        (RULES.replace('overflow: "8000", ', ""), 33, "after_s needs an overflow number"),
        (RULES.replace('{to: "101", overflow', '{too: "101", overflow'), 33, "unknown transfer option 'too'"),
        (RULES.replace('"+1555030*": {queue', '"sales": {queue'), 11, "is not a dialled number or glob"),
        (RULES.replace("{tone: 440, ms: 200}", "{tone: 20000, ms: 200}"), 14, "cannot be heard on a phone line"),
        (RULES.replace("{tone: 440, ms: 200}", "greeting.mp3"), 14, "a prompt is a .wav file"),
        (RULES.replace("{tone: 440, ms: 200}", "missing.wav"), 14, "does not exist"),
        (RULES.replace("    timeout_s: 4\n", "    timeout_s: 4\n    repeat: 2\n"), 16, "unknown menu key 'repeat'"),
        (RULES.replace('default: {queue: "8000"}\n', ""), 24, "need a 'default' action"),
        (RULES.replace('fallback: "100"', "fallback: reception"), 38, "fallback must be a number"),
        (
            RULES.replace('{voicemail: "100"}\n  - name: vip', '{email: "100"}\n  - name: vip'),
            30,
            "unknown action 'email'",
        ),
    ],
)
def test_invalid_rules_are_refused_with_the_line_and_the_problem(broken: str, line: int, problem: str) -> None:
    with pytest.raises(RuleError) as info:
        RoutingRules.parse(broken, "routing.yaml")
    assert str(info.value).startswith(f"routing.yaml:{line}: "), str(info.value)
    assert problem in info.value.problem


def test_toml_rules_name_their_lines_too(tmp_path: Path) -> None:
    path = tmp_path / "routing.toml"
    text = (
        'timezone = "UTC"\n'
        "[lists]\n"
        'vip = ["+1555*"]\n'
        "[menus.main]\n"
        "timeout_s = 3\n"
        "[menus.main.options]\n"
        '"1" = {queue = "8000"}\n'
        '"2" = {transfer = "front desk"}\n'
        "[[rules]]\n"
        'name = "vip"\n'
        'match = {caller_list = "vip"}\n'
        'action = {transfer = "101"}\n'
        "[default]\n"
        'menu = "main"\n'
    )
    path.write_text(text)
    with pytest.raises(RuleError) as info:
        RoutingRules.load(path)
    assert info.value.line == 8 and "must be a number" in info.value.problem
    path.write_text(text.replace('"front desk"', '"102"'))
    rules = RoutingRules.load(path)
    assert rules.decide(CallContext(caller="+15551234")).action == Route("transfer", "101")
    assert rules.decide(CallContext(caller="+4420")).action == PlayMenu("main")


def write_wav(path: Path, rate: int, ms: int, *, width: int = 2, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(b"\x10\x00" * (rate * ms // 1000) * channels if width == 2 else b"\x80" * (rate * ms // 1000))
    return path


def test_an_8khz_wav_plays_as_it_is_and_stereo_is_mixed_down(tmp_path: Path) -> None:
    mono = load_wav(write_wav(tmp_path / "mono.wav", 8000, 500))
    assert len(mono.pcm) == 500 * BYTES_PER_MS
    stereo = load_wav(write_wav(tmp_path / "stereo.wav", 8000, 500, channels=2))
    assert stereo.pcm == mono.pcm


def test_another_rate_is_resampled_with_the_voice_extra(tmp_path: Path) -> None:
    pytest.importorskip("soxr")
    prompt = load_wav(write_wav(tmp_path / "wide.wav", 16000, 500))
    assert abs(len(prompt.pcm) - 500 * BYTES_PER_MS) <= 4


def test_without_the_voice_extra_another_rate_is_refused_saying_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_soxr(name: str, *args: object, **kwargs: object) -> object:
        if name == "soxr":
            raise ImportError("No module named 'soxr'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_soxr)
    path = write_wav(tmp_path / "wide.wav", 16000, 500)
    with pytest.raises(PromptError, match=r"is 16000 Hz and the PBX plays 8000 Hz: convert it .*masterlinc\[voice\]"):
        load_wav(path)
    with pytest.raises(RuleError, match=r"routing.yaml:14: prompt file .*wide.wav is 16000 Hz"):
        RoutingRules.parse(RULES.replace("{tone: 440, ms: 200}", str(path)), "routing.yaml")


def test_an_8_bit_wav_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="8-bit samples: save it as 16-bit PCM"):
        load_wav(write_wav(tmp_path / "old.wav", 8000, 100, width=1))


def test_a_prompt_path_is_relative_to_the_rule_file(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    write_wav(tmp_path / "prompts" / "main.wav", 8000, 250)
    path = tmp_path / "routing.yaml"
    path.write_text(RULES.replace("{tone: 440, ms: 200}", "prompts/main.wav"))
    rules = RoutingRules.load(path)
    assert rules.menus["main"].prompt.ms == 250
