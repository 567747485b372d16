"""The soak's trend checks and its per-agent backlog figures, on hand-made samples."""

from __future__ import annotations

from hub.sdk.feed import agent_of_consumer, consumer_name
from hub.soak.metrics import (
    MIB,
    Sample,
    behind_summary,
    call_state_dropped,
    lag_recovers,
    memory_flat,
    render,
    services_stay_up,
)


def test_feed_consumers_name_their_agent_and_other_consumers_name_none() -> None:
    assert agent_of_consumer(consumer_name("routing", 3)) == "routing"
    assert agent_of_consumer(consumer_name("agent-crm-v2", 15)) == "agent-crm-v2"
    assert agent_of_consumer("ml-recorder") is None
    assert agent_of_consumer("ml-agent-routing-px") is None


def test_each_agent_s_backlog_and_what_ingest_held_are_summarised_and_shown_per_sample() -> None:
    samples = [Sample(float(t), {"ingest": 80 * MIB}, 0, t, behind={"routing": n, "crm": 2 * n}, held=3 * n)
               for t, n in enumerate([0, 10, 400, 20, 0])]  # fmt: skip
    samples.append(Sample(5.0, {}, None, None, "ingest"))  # ingest killed: nothing to read
    summary = behind_summary(samples)
    assert summary == [
        "agent crm behind its feed: p50 20, p99 800, max 800 events; at the end 0",
        "agent routing behind its feed: p50 10, p99 400, max 400 events; at the end 0",
        "ingest held (pipeline and outbox): p50 30, p99 1200, max 1200 frames, reads and events",
    ]
    table = render(samples, ["ingest"]).splitlines()
    assert table[0].split() == ["time", "ingest", "lag", "logged", "crm", "behind", "routing", "behind", "ingest",
                                "held", "fault"]  # fmt: skip
    assert table[3].split()[-3:] == ["800", "400", "1200"]
    assert table[6].split()[-2:] == ["-", "ingest"]


def test_memory_that_keeps_growing_fails_and_a_restart_dip_does_not() -> None:
    flat = [Sample(float(t), {"ingest": (80 if t != 4 else 20) * MIB}) for t in range(9)]
    assert memory_flat(flat, ["ingest"]).ok
    growing = [Sample(float(t), {"ingest": (80 + 3 * t) * MIB}) for t in range(9)]
    verdict = memory_flat(growing, ["ingest"])
    assert not verdict.ok and "ingest" in verdict.detail


def _instances(restarts: list[float], plateau_of: list[int], end_s: float = 1800) -> list[Sample]:
    """A service killed at ``restarts``: each instance climbs 10 MiB over its first 300 s, then holds its plateau."""
    starts = [0.0, *restarts]
    samples = []
    for t in range(0, int(end_s), 5):
        n = max(i for i, start in enumerate(starts) if start <= t)
        age = t - starts[n]
        samples.append(Sample(float(t), {"ingest": int((plateau_of[n] - 10 * max(0.0, 1 - age / 300)) * MIB)}))
    return samples


def test_memory_counts_each_instance_only_after_its_warm_up() -> None:
    restarts = [180.0, 600.0, 1020.0, 1440.0]  # where the soak's rotation kills ingest
    refilling = _instances(restarts, [88, 88, 88, 88, 88])
    assert not memory_flat(refilling, ["ingest"]).ok  # the restarts alone make the last third look bigger
    restarted = [("ingest", at) for at in restarts] + [("worker", 240.0)]
    assert memory_flat(refilling, ["ingest"], restarts=restarted, warmup_s=300).ok
    climbing = _instances(restarts, [80, 83, 86, 89, 92])  # each instance settles higher: state that accumulates
    verdict = memory_flat(climbing, ["ingest"], restarts=restarted, warmup_s=300)
    assert not verdict.ok and verdict.detail.startswith("ingest 86.0 -> 89.0 MiB")


def test_the_nats_server_s_memory_is_shown_not_judged_while_a_hub_process_still_is() -> None:
    samples = [Sample(float(t), {"nats": (100 + 10 * t) * MIB, "ingest": 80 * MIB}) for t in range(9)]
    verdict = memory_flat(samples, ["ingest", "nats"], shown=["nats"])
    assert verdict.ok and "not judged: nats 140.0 -> 170.0 MiB" in verdict.detail
    growing = [Sample(float(t), {"nats": 100 * MIB, "ingest": (80 + 3 * t) * MIB}) for t in range(9)]
    failed = memory_flat(growing, ["ingest", "nats"], shown=["nats"])
    assert not failed.ok and failed.detail.startswith("ingest 92.0 -> 101.0 MiB")


def test_lag_must_come_back_under_the_bound_after_each_fault_and_end_at_zero() -> None:
    samples = [Sample(float(t), lag=lag) for t, lag in enumerate([0, 500, 50, 0])]
    assert lag_recovers(samples, [("nats", 0.5)], bound=100, within_s=2, final_lag=0).ok
    assert not lag_recovers(samples, [("nats", 0.5)], bound=10, within_s=1, final_lag=0).ok
    assert not lag_recovers(samples, [("nats", 0.5)], bound=100, within_s=2, final_lag=3).ok


def test_a_service_down_outside_its_own_fault_fails_and_one_restarting_in_its_fault_does_not() -> None:
    """The ninth 30-minute run: the worker exited on a NATS timeout at 66 s and was down until its own fault (240 s).
    Samples within 30 s of a service's own fault count as that fault's."""
    up = {"worker": 94 * MIB, "ingest": 80 * MIB}
    samples = [Sample(float(t), dict(up)) for t in range(0, 300, 5)]
    samples[10] = Sample(50.0, {"ingest": 80 * MIB})  # the worker killed by its fault at 48 s, restarted
    faults = [("worker", 48.0), ("nats", 60.0)]
    assert services_stay_up(samples, ["worker", "ingest", "nats"], faults, within_s=30, shown=["nats"]).ok
    for t in range(66, 240, 5):
        samples[t // 5] = Sample(float(t), {"ingest": 80 * MIB})
    verdict = services_stay_up(samples, ["worker", "ingest", "nats"], faults, within_s=30, shown=["nats"])
    assert not verdict.ok
    assert verdict.detail.startswith("worker down outside its faults at 32 samples, 81-236 s")


def test_call_state_left_after_every_call_ended_fails_and_names_who_held_it() -> None:
    assert call_state_dropped({"coordinator": 0.0, "agent-routing": 0.0}).ok
    kept = call_state_dropped({"coordinator": 0.0, "agent-routing": 37.0})
    assert not kept.ok and kept.detail == "still held: agent-routing 37"
    unread = call_state_dropped({"coordinator": None, "agent-routing": 0.0})
    assert not unread.ok and unread.detail == "not read: coordinator"
