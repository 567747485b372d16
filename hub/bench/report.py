"""Printing benchmark results as a table."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from hub.bench.registry import BenchResult


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def render_table(results: Sequence[BenchResult], console: Console | None = None) -> None:
    table = Table(title="masterlinc bench", show_lines=True)
    for col in ("benchmark", "figures", "baseline (same run)", "ratio", "target", "met"):
        table.add_column(col)
    for r in results:
        figures = "\n".join(f"{f.name}: {_fmt(f.value)} {f.unit}" for f in r.figures)
        base = "\n".join(f"{f.name}: {_fmt(f.value)} {f.unit}" for f in r.baseline)
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f} ({r.better} is better)"
        met = {True: "yes", False: "NO", None: "-"}[r.met]
        table.add_row(r.name, figures, base, ratio, r.target, met)
    (console or Console()).print(table)
    for r in results:
        if r.notes:
            (console or Console()).print(f"[bold]{r.name}[/bold]: {r.notes}")
