#!/usr/bin/env python3
"""Set up and run MasterLinc from a fresh clone with nothing but Python 3.11+.

    python3 dev.py up       # create .venv, install, run the whole hub (embedded NATS, SQLite, simulator)
    python3 dev.py test     # create .venv, install, run the test suite
    python3 dev.py check    # format check, lint, strict type check
    python3 dev.py bench    # the benchmarks (arguments are passed to `masterlinc bench`)

Any other first argument is passed to the `masterlinc` command inside the venv.
The venv is re-installed only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".masterlinc-install"


def _ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script runs before anything checks the version
        sys.exit(f"MasterLinc needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print("creating .venv ...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    print("installing masterlinc and its development tools into .venv ...", file=sys.stderr)
    subprocess.run(  # noqa: S603 - our own venv's python
        [
            str(BIN / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-e",
            ".[dev,voice,voice-piper]",
        ],
        cwd=ROOT,
        check=True,
    )
    STAMP.write_text(wanted)


def _run(args: list[str]) -> int:
    return subprocess.call(args, cwd=ROOT)  # noqa: S603 - fixed tool paths inside our venv


def main(argv: list[str]) -> int:
    _ensure_venv()
    command, rest = (argv[0], argv[1:]) if argv else ("up", [])
    if command == "test":
        return _run([str(BIN / "python"), "-m", "pytest", *rest])
    if command == "check":
        steps = [
            [str(BIN / "ruff"), "format", "--check", "."],
            [str(BIN / "ruff"), "check", "."],
            [str(BIN / "mypy"), "hub", "schemas", "agents", "migrations", "tests", "dev.py"],
        ]
        for step in steps:
            code = _run(step)
            if code != 0:
                return code
        return 0
    return _run([str(BIN / "masterlinc"), command, *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
