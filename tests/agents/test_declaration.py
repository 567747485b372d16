"""The SDK without a server: declarations, filters turned into consumer subjects, partition ownership, the public
surface, and the template agent the docs show."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

import hub.sdk
from hub.sdk import Agent, CallAnswered, CallEnded, CallRinging, Context, EventFilter
from hub.sdk.filters import collide, consumer_filters, covers
from hub.sdk.partitions import owned, owner
from schemas import events, subjects
from tests.factories import make_event

ROOT = Path(__file__).resolve().parents[2]
PREFIX = subjects.feed_prefix(3)


def test_the_sdk_exports_every_event_class_and_each_name_it_lists() -> None:
    for cls in events.EVENT_TYPES:
        assert getattr(hub.sdk, cls.__name__) is cls
        assert cls.__name__ in hub.sdk.__all__
    assert all(hasattr(hub.sdk, name) for name in hub.sdk.__all__)
    for name in ("Agent", "Context", "CommandClient", "AgentRuntime", "Tracker", "Drop", "TransferArgs"):
        assert name in hub.sdk.__all__


def test_filters_become_subjects_of_one_partition_through_the_subject_builders() -> None:
    assert EventFilter(CallAnswered).subject(PREFIX) == "ml.feed.3.*.call.*.answered"
    assert EventFilter(domain="agent", pbx_id="main").subject(PREFIX) == "ml.feed.3.main.agent.*.*"
    assert EventFilter().subject(PREFIX) == "ml.feed.3.>"
    with pytest.raises(ValueError, match="unknown domain 'calls'"):
        EventFilter(domain="calls")
    with pytest.raises(ValueError, match="not 'agent'"):
        EventFilter(CallAnswered, domain="agent")


def test_covered_filters_are_dropped_and_overlapping_ones_widen_to_the_partition() -> None:
    assert covers("a.*.c", "a.b.c")
    assert covers("a.>", "a.b.c")
    assert not covers("a.b.c", "a.*.c")
    assert not covers("a.*", "a.b.c")
    assert collide("a.*.c", "a.b.*")
    assert not collide("a.b.c", "a.d.c")
    by_type = [EventFilter(CallAnswered), EventFilter(CallEnded)]
    assert consumer_filters(by_type, PREFIX) == ["ml.feed.3.*.call.*.answered", "ml.feed.3.*.call.*.ended"]
    with_domain = [*by_type, EventFilter(domain="call")]
    assert consumer_filters(with_domain, PREFIX) == ["ml.feed.3.*.call.*.*"]
    covered = [EventFilter(domain="call", pbx_id="main"), EventFilter(pbx_id="main"), EventFilter(pbx_id="b")]
    assert consumer_filters(covered, PREFIX) == ["ml.feed.3.b.*.*.*", "ml.feed.3.main.*.*.*"]
    partial = [EventFilter(CallEnded), EventFilter(domain="call", pbx_id="main")]
    assert consumer_filters(partial, PREFIX) == ["ml.feed.3.>"]  # neither covers the other: the runtime filters


def test_handlers_get_only_what_they_declared_and_owned_handlers_only_owned_calls() -> None:
    agent = Agent("decl")

    @agent.on(CallAnswered)
    async def answered(event: CallAnswered, ctx: Context) -> None: ...

    @agent.on(CallRinging, owned=True)
    async def ringing(event: CallRinging, ctx: Context) -> None: ...

    @agent.on(domain="call", pbx="other")
    async def other_pbx(event: events.EventBase, ctx: Context) -> None: ...

    assert agent.handlers_for(make_event(events.CallAnswered), owns=False) == [answered]
    assert agent.handlers_for(make_event(events.CallRinging), owns=False) == []
    assert agent.handlers_for(make_event(events.CallRinging), owns=True) == [ringing]
    assert agent.handlers_for(make_event(events.CallEnded, pbx_id="other"), owns=False) == [other_pbx]
    declared = {f.event_type for f in agent.filters()}
    assert {CallAnswered, CallRinging, events.AgentAssigned, events.AgentHandedOff} <= declared  # + the runtime's


def test_bad_declarations_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="reserved for the coordinator"):
        Agent("coordinator")
    with pytest.raises(ValueError, match="not a valid subject token"):
        Agent("my agent")
    with pytest.raises(ValueError, match="event classes or a domain, not both"):
        Agent("x").on(CallAnswered, domain="call")
    with pytest.raises(TypeError, match="event class such as CallAnswered"):
        Agent("x").on("call.answered")  # type: ignore[arg-type]


def test_partitions_are_split_evenly_and_a_new_replica_moves_only_its_share() -> None:
    replicas = ["r1", "r2", "r3"]
    counts = Counter(owner(p, replicas) for p in range(256))
    assert set(counts) == set(replicas)
    assert min(counts.values()) > 256 / 3 * 0.6
    for me in replicas:
        assert owned(me, replicas, 256) == {p for p in range(256) if owner(p, replicas) == me}
    before = {p: owner(p, replicas) for p in range(256)}
    after = {p: owner(p, [*replicas, "r4"]) for p in range(256)}
    moved = [p for p in range(256) if before[p] != after[p]]
    assert all(after[p] == "r4" for p in moved)  # nothing moves between the old replicas
    assert owned("alone", [], 8) == frozenset(range(8))


def test_the_feed_transform_hashes_the_key_token_into_the_configured_partitions() -> None:
    source, destination = subjects.feed_transform(16)
    assert source == "ml.evt.*.*.*.*"
    assert destination.startswith("ml.feed.{{partition(16,3)}}.")
    assert subjects.feed_partitions(destination) == 16
    with pytest.raises(ValueError, match="partitions must be"):
        subjects.feed_transform(0)


def test_the_docs_show_the_template_agent_as_it_is() -> None:
    doc = (ROOT / "docs/agents.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    source = (ROOT / "agents/template.py").read_text()
    assert source in blocks, "docs/agents.md must show agents/template.py verbatim: copy the file into the page"
