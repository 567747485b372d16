"""Samples of a soak run (RSS of every process, the recorder's consumer lag, events logged, the fault under way),
the table printed from them, and the checks over a run:

- memory is flat when, for every hub process, the median RSS of the run's last third is at most the median of its
  second third plus ``max(1 MiB, 2 %)`` (the first third is warm-up). D§11's 5-minute warm-up applies to each
  process instance: the soak kills every service every few minutes, and a restarted one fills its bounded caches
  again (ingest keeps ended calls 5 minutes), so only samples taken ``warmup_s`` after the instance started count;
  otherwise the verdict would follow where the restarts fell, not whether memory grows. The nats-server is shown,
  not judged: its RSS follows what its streams store (D§11's bound is for the hub's own processes, and the streams'
  retention bounds the server's);
- lag recovers when, after every fault, a sample within ``within_s`` shows the lag at or under ``bound`` events,
  and the run ends with no lag at all;
- services stay up when every hub process is in every sample, but for those within ``within_s`` of its own fault:
  the worker once exited on a NATS timeout and stayed down three minutes until its own fault restarted it, and no
  other verdict saw it (recovery is timed from a fault, the lag is the recorder's);
- call state is let go when, once every call has ended, the services that keep per-call state (the coordinator's
  call views, the routing agent's call facts) report none: state kept past a call's end is a leak that RSS shows
  only slowly (the routing agent kept facts for calls assigned after they ended, one set per call).
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hub.bench.registry import percentile
from hub.soak.invariants import Verdict

MIB = 1024


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process in KiB (Linux /proc), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


@dataclass(frozen=True)
class Sample:
    at_s: float
    rss_kib: dict[str, int] = field(default_factory=dict)
    lag: int | None = None
    logged: int | None = None
    fault: str = ""
    behind: dict[str, int] = field(default_factory=dict)  # agent -> feed events not yet handled (all partitions)
    held: int | None = None  # what ingest held: frames and reads in its pipeline, events in its outbox


def memory_flat(
    samples: Sequence[Sample],
    names: Sequence[str],
    *,
    shown: Collection[str] = (),
    restarts: Sequence[tuple[str, float]] = (),
    warmup_s: float = 0.0,
) -> Verdict:
    """The memory verdict over ``names``; those also in ``shown`` get their medians in the detail, never a FAIL.
    ``restarts``: (process, time) of each kill, after which a sample counts only ``warmup_s`` later."""
    thirds = len(samples) // 3
    if thirds < 2:
        return Verdict("memory flat", False, f"too few samples ({len(samples)}) to see a trend")
    grew, not_judged, unjudged = [], [], []
    for name in names:
        started = [0.0, *sorted(at for who, at in restarts if who == name)]

        def settled(sample: Sample, started: list[float] = started) -> bool:
            return sample.at_s - max(t for t in started if t <= sample.at_s) >= warmup_s

        second = [s.rss_kib[name] for s in samples[thirds : 2 * thirds] if name in s.rss_kib and settled(s)]
        last = [s.rss_kib[name] for s in samples[2 * thirds :] if name in s.rss_kib and settled(s)]
        if not second or not last:
            unjudged.append(name)
            continue
        before, after = statistics.median(second), statistics.median(last)
        figure = f"{name} {before / MIB:.1f} -> {after / MIB:.1f} MiB"
        if name in shown:
            not_judged.append(figure)
        elif after > before + max(MIB, 0.02 * before):
            grew.append(figure)
    aside = f" (not judged: {'; '.join(not_judged)})" if not_judged else ""
    if unjudged:
        aside += f" (no sample {warmup_s:.0f} s after a restart in both thirds: {', '.join(unjudged)})"
    if grew:
        return Verdict("memory flat", False, "; ".join(grew) + aside)
    settled_note = f", samples {warmup_s:.0f} s or more after the process (re)started" if warmup_s else ""
    within = "last third's median RSS within max(1 MiB, 2 %) of the second third's"
    return Verdict("memory flat", True, f"{within}{settled_note}{aside}")


def lag_recovers(samples: Sequence[Sample], faults_at: Sequence[tuple[str, float]], *, bound: int,
                 within_s: float, final_lag: int | None) -> Verdict:  # fmt: skip
    slow = []
    for name, at in faults_at:
        after = [s for s in samples if at < s.at_s <= at + within_s and s.lag is not None]
        if not any(s.lag is not None and s.lag <= bound for s in after):
            slow.append(name)
    lags = sorted(s.lag for s in samples if s.lag is not None)
    p99 = int(percentile(lags, 99)) if lags else None
    if slow or final_lag != 0:
        detail = f"lag above {bound} for {within_s:.0f} s after: {', '.join(slow) or '-'}; at the end {final_lag}"
        return Verdict("lag back under the bound after each fault", False, detail)
    return Verdict("lag back under the bound after each fault", True,
                   f"bound {bound} events within {within_s:.0f} s; p99 of samples {p99}; 0 at the end")  # fmt: skip


def services_stay_up(samples: Sequence[Sample], names: Sequence[str], faults_at: Sequence[tuple[str, float]], *,
                     within_s: float, shown: Collection[str] = ()) -> Verdict:  # fmt: skip
    down: dict[str, list[float]] = {}
    for sample in samples:
        for name in names:
            if name in shown or name in sample.rss_kib:
                continue
            if any(fault == name and 0 <= sample.at_s - at <= within_s for fault, at in faults_at):
                continue
            down.setdefault(name, []).append(sample.at_s)
    if down:
        detail = "; ".join(f"{name} down outside its faults at {len(times)} samples, {times[0]:.0f}-{times[-1]:.0f} s"
                           for name, times in down.items())  # fmt: skip
        return Verdict("services stayed up", False, detail)
    return Verdict(
        "services stayed up", True, f"every hub process in every sample but within {within_s:.0f} s of its own fault"
    )


def agents_of(samples: Sequence[Sample]) -> list[str]:
    return sorted({name for s in samples for name in s.behind})


def behind_summary(samples: Sequence[Sample]) -> list[str]:
    """Per agent: how far behind its feed it ran (p50, p99, max events) and where it ended; reported, not judged
    (D§11 bounds the recorder's lag; an agent's is what its handlers cost on this machine)."""
    lines = []
    for agent in agents_of(samples):
        values = sorted(s.behind[agent] for s in samples if agent in s.behind)
        p50, p99 = int(percentile(values, 50)), int(percentile(values, 99))
        last = next((s.behind[agent] for s in reversed(samples) if agent in s.behind), None)
        lines.append(f"agent {agent} behind its feed: p50 {p50}, p99 {p99}, max {values[-1]} events; at the end {last}")
    held = sorted(s.held for s in samples if s.held is not None)
    if held:
        p50, p99 = int(percentile(held, 50)), int(percentile(held, 99))
        lines.append(
            f"ingest held (pipeline and outbox): p50 {p50}, p99 {p99}, max {held[-1]} frames, reads and events"
        )
    return lines


def render(samples: Sequence[Sample], names: Sequence[str]) -> str:
    """The run's table: time, RSS per process (MiB), lag, events logged, each agent's backlog, fault under way."""
    agents = agents_of(samples)
    heads = ["time", *names, "lag", "logged", *(f"{a} behind" for a in agents), "ingest held", "fault"]
    rows = [
        [f"{s.at_s:6.0f}s", *(f"{s.rss_kib[n] / MIB:.1f}" if n in s.rss_kib else "-" for n in names),
         "-" if s.lag is None else str(s.lag), "-" if s.logged is None else str(s.logged),
         *(str(s.behind[a]) if a in s.behind else "-" for a in agents), "-" if s.held is None else str(s.held),
         s.fault]
        for s in samples
    ]  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(heads)]
    lines = [" ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True))]
    lines += [" ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def call_state_dropped(held: Mapping[str, float | None]) -> Verdict:
    """``held``: (service, what its gauge of per-call state read once every call had ended; None: not read)."""
    unread = [name for name, n in held.items() if n is None]
    kept = [f"{name} {n:.0f}" for name, n in held.items() if n]
    why = ([f"still held: {', '.join(kept)}"] if kept else []) + ([f"not read: {', '.join(unread)}"] if unread else [])
    if why:
        return Verdict("call state let go at the end", False, "; ".join(why))
    return Verdict("call state let go at the end", True, ", ".join(f"{name} 0" for name in held))
