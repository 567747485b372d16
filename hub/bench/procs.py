"""Processes a benchmark starts (a simulator, hub services): this interpreter, stdout piped for ``ready`` lines,
always stopped (SIGTERM, then SIGKILL after 10 s) and reaped."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def spawn(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """``python ARGS`` (e.g. ``["-m", "hub.cli", "worker"]`` or ``["-c", CODE, ...]``) for the block's duration."""
    proc = subprocess.Popen(  # noqa: S603 - this interpreter with our own code
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
