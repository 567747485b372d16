"""``masterlinc soak``: the whole hub as processes under load-driver traffic for N minutes, a rotating fault every
interval (NATS, then each service in turn), samples every few seconds, and the verdict at the end: the D§4
invariants against the simulator's ground truth, every fault recovered, lag back under its bound after each fault,
and (unless left out) memory flat (:mod:`hub.soak.metrics` defines "flat")."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hub.config import Settings
from hub.soak.evidence import write_evidence
from hub.soak.faults import RECOVER_WITHIN_S, Injected, rotation
from hub.soak.invariants import (
    Verdict,
    commands_once,
    event_ids_once,
    failed,
    inferred_only_hidden,
    recovered,
    transitions_once,
)
from hub.soak.metrics import (
    Sample,
    behind_summary,
    call_state_dropped,
    lag_recovers,
    memory_flat,
    render,
    rss_kib,
    services_stay_up,
)
from hub.soak.rig import END_GRACE_S, HubRig, running_hub
from hub.soak.traffic import load
from schemas.events import Event


@dataclass
class SoakReport:
    samples: list[Sample] = field(default_factory=list)
    injected: list[Injected] = field(default_factory=list)
    faults_at: list[tuple[str, float]] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    logged: int = 0
    call_state: dict[str, float | None] = field(default_factory=dict)  # per-call state held once every call ended
    evidence: Path | None = None  # the journal and the log of the calls a failed verdict names

    @property
    def ok(self) -> bool:
        return not failed(self.verdicts)

    def text(self) -> str:
        lines = [render(self.samples, self.names), ""]
        lines += [
            f"recovery {i.recovery.fault}: " + ("none" if i.recovery.seconds is None else f"{i.recovery.seconds:.2f} s")
            for i in self.injected
        ]
        lines += ["", *behind_summary(self.samples)]
        lines += ["", *(v.line() for v in self.verdicts)]
        if self.evidence is not None:
            lines.append(f"the calls those verdicts name, journal beside log: {self.evidence}")
        lines += ["", f"soak {'PASSED' if self.ok else 'FAILED'}"]
        return "\n".join(lines)  # fmt: skip


async def _sample(rig: HubRig, started: float, fault: str) -> Sample:
    rss = {name: kib for name, pid in rig.pids().items() if (kib := rss_kib(pid)) is not None}
    return Sample(
        time.monotonic() - started,
        rss,
        await rig.lag(),
        await rig.logged(),
        fault,
        await rig.behind(),
        await rig.held(),
    )


async def soak(
    data_dir: Path, db_url: str, *, minutes: float, rate: float, fault_every_s: float, sample_every_s: float = 5.0,
    check_memory: bool = True, settings: Settings | None = None, echo: Callable[[str], None] = print,
    settle_within_s: float = 120.0,
) -> SoakReport:  # fmt: skip
    report = SoakReport()
    async with running_hub(data_dir, db_url, settings=settings) as rig:
        report.names = [*rig.names, "nats"]
        faults = rotation(rig)
        started = time.monotonic()
        current = ""
        stop = asyncio.Event()

        async def sampler() -> None:
            while not stop.is_set():
                sample = await _sample(rig, started, current)
                report.samples.append(sample)
                rss = " ".join(f"{name}={kib // 1024}M" for name, kib in sample.rss_kib.items())
                behind = " ".join(f"{agent}-behind={n}" for agent, n in sorted(sample.behind.items()))
                echo(
                    f"{sample.at_s:6.0f}s lag {sample.lag} logged {sample.logged} {rss} {behind} "
                    f"ingest-held={sample.held} {sample.fault}"
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), sample_every_s)

        sampling = asyncio.create_task(sampler())
        try:
            async with load(rig.sim, events_per_s=rate, seconds=minutes * 60) as traffic:
                n = 0
                while traffic.task is not None and not traffic.task.done():
                    due = started + (n + 1) * fault_every_s
                    if due > started + minutes * 60 - 5:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(traffic.task), max(due - time.monotonic(), 0))
                    if traffic.task.done():
                        break
                    name, inject = faults[n % len(faults)]
                    current = name
                    report.faults_at.append((name, time.monotonic() - started))
                    report.injected.append(await inject())
                    current = ""
                    n += 1
            try:
                await rig.wait_settled(within_s=settle_within_s)
            except TimeoutError as exc:  # reported with the rest: the samples must not be lost
                report.verdicts.append(Verdict("settled after the traffic", False, str(exc)))
        finally:
            stop.set()
            await sampling
        final = await _sample(rig, started, "end")
        report.samples.append(final)
        events = await rig.log_events()
        report.logged = len(events)
        report.verdicts += [
            *ground_truth_verdicts(rig, events, report.injected, within_s=RECOVER_WITHIN_S),
            lag_recovers(
                report.samples,
                report.faults_at,
                bound=max(200, int(rate * 2)),
                within_s=RECOVER_WITHIN_S,
                final_lag=final.lag,
            ),
            services_stay_up(
                report.samples, report.names, report.faults_at, within_s=RECOVER_WITHIN_S, shown=INFRASTRUCTURE
            ),
        ]
        named = [call for verdict in failed(report.verdicts) for call in verdict.calls]
        report.evidence = write_evidence(data_dir / "differences.txt", rig.sim.journal.entries, events, named,
                                         rig.cuts)  # fmt: skip
        report.call_state = await _call_state(rig)
        report.verdicts.append(call_state_dropped(report.call_state))
        if check_memory:
            report.verdicts.append(memory_flat(report.samples, report.names, shown=INFRASTRUCTURE,
                                               restarts=report.faults_at, warmup_s=WARMUP_S))  # fmt: skip
    return report


async def _call_state(rig: HubRig, within_s: float = 60.0) -> dict[str, float | None]:
    """What the services in :data:`CALL_STATE` hold once the agents have handled their whole feed (they may still
    be catching up when ingest and the recorder have settled); what they last said after ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        behind = await rig.behind()
        held = {name: await rig.metric(name, gauge) for name, gauge in CALL_STATE.items() if name in rig.names}
        caught_up = bool(behind) and not any(behind.values())
        if (caught_up and not any(held.values()) and None not in held.values()) or time.monotonic() > deadline:
            return held
        await asyncio.sleep(0.5)


async def run_soak(settings: Settings, *, minutes: float, rate: float, fault_every_s: float, data_dir: Path,
                   database_url: str | None = None, check_memory: bool = True) -> int:  # fmt: skip
    """The CLI's entry: the event log is ``database_url`` (it must be empty: the journal starts empty), else
    SQLite in the data directory."""
    db_url = database_url or f"sqlite+aiosqlite:///{data_dir / 'soak.db'}"
    report = await soak(data_dir, db_url, minutes=minutes, rate=rate, fault_every_s=fault_every_s,
                        check_memory=check_memory, settings=settings)  # fmt: skip
    print(report.text(), flush=True)
    return 0 if report.ok else 1


CALL_STATE = {"coordinator": "ml_coordinator_calls", "agent-routing": "ml_routing_calls"}
"""The services that keep state per call, and the gauge that counts it: all zero once every call has ended."""

INFRASTRUCTURE = ("nats",)
"""Processes whose memory the soak shows but does not judge: the nats-server's RSS follows what its streams store."""

WARMUP_S = 300.0
"""D§11's warm-up, applied to each process instance: a killed service's samples count again this long after it
restarted (a fresh instance fills its bounded caches first: ingest's 5-minute memory of ended calls)."""

KILL_SLACK_S = 10.0
"""How far before an ingest SIGKILL a transition may be lost with what the process held unpublished (read but
not yet sent): under the soak's load on 2 cores ingest's backlog reached seconds. Such a loss is counted in the
verdict's detail; a transition twice is never excused."""


def ground_truth_verdicts(
    rig: HubRig, events: list[Event], injected: list[Injected], *, within_s: float
) -> list[Verdict]:
    """The D§4 invariants of a run against the simulator's journal, and every fault recovered within ``within_s``."""
    entries = rig.sim.journal.entries
    return [
        transitions_once(
            entries, rig.sim.config.visible, events, end_grace_s=END_GRACE_S, cuts=rig.cuts, crash_slack_s=KILL_SLACK_S
        ),
        inferred_only_hidden(entries, events, cuts=rig.cuts),
        event_ids_once(e.event_id for e in events),
        commands_once(entries),
        recovered([i.recovery for i in injected], within_s=within_s),
    ]
