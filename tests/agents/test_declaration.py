"""The SDK without a server: declarations, filters turned into consumer subjects, partition ownership, the public
surface, and the template agent the docs show."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hub.sdk
from hub.sdk import Agent, CallAnswered, CallEnded, CallRinging, Context, EventFilter
from hub.sdk.filters import collide, consumer_filters, covers
from hub.sdk.partitions import assignment, owned, owner
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


REPLICA_IDS = st.text(alphabet="0123456789abcdefghjkmnpqrstvwxyz", min_size=26, max_size=26)


@settings(max_examples=300, deadline=None)
@given(replicas=st.sets(REPLICA_IDS, min_size=1, max_size=6), partitions=st.integers(1, 64), joining=REPLICA_IDS)
def test_partitions_are_split_evenly_and_a_new_replica_moves_little_more_than_its_share(
    replicas: set[str], partitions: int, joining: str
) -> None:
    """Plain rendezvous hashing gave one of two replicas all 8 partitions once in 128 memberships (a CI failure)."""
    before = assignment(replicas, partitions)
    assert sorted(before) == list(range(partitions))
    counts = Counter(before.values())
    assert len(counts) == min(len(replicas), partitions)  # every replica reads something while there is enough
    assert max(counts.values()) - min(counts.values()) <= (1 if len(counts) == len(replicas) else 0)
    for me in replicas:
        assert owned(me, replicas - {me}, partitions) == {p for p, r in before.items() if r == me}
        assert owner(0, replicas, partitions) == before[0]
    if joining in replicas:
        return
    after = assignment([*replicas, joining], partitions)
    moved = [p for p in range(partitions) if before[p] != after[p]]
    share = math.ceil(partitions / (len(replicas) + 1))
    assert len(moved) >= sum(1 for r in after.values() if r == joining)
    # measured over 100,000 random memberships: never more than 2 shares + (replicas - 2); 1.8 shares at 32 partitions
    assert len(moved) <= 2 * share + len(replicas)


def test_a_lone_replica_reads_every_partition() -> None:
    assert owned("alone", [], 8) == frozenset(range(8))
    assert assignment([], 8) == {}


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
