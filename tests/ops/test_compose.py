"""compose.yaml is valid against the Compose specification and every service runs a command the CLI has."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer.main
import yaml

from hub.cli import app

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def test_compose_file_follows_the_compose_specification() -> None:
    schema_text = (
        importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    validator = jsonschema.Draft202012Validator(json.loads(schema_text))
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_compose_validation_catches_a_broken_file() -> None:
    schema_text = (
        importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    broken = _compose()
    broken["services"]["worker"]["restart_when"] = "always"  # not a Compose key
    assert list(jsonschema.Draft202012Validator(json.loads(schema_text)).iter_errors(broken))


def _cli_paths() -> set[tuple[str, ...]]:
    root = typer.main.get_command(app)
    paths: set[tuple[str, ...]] = set()

    def walk(cmd: Any, prefix: tuple[str, ...]) -> None:  # typer vendors click: duck-type its groups
        paths.add(prefix)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, (*prefix, name))

    walk(root, ())
    return paths


HUB_SERVICES = ("migrate", "ingest", "recorder", "worker", "coordinator", "routing", "crm", "mcp")


@pytest.mark.parametrize("service", HUB_SERVICES)
def test_every_hub_service_runs_an_existing_cli_command(service: str) -> None:
    command: list[str] = _compose()["services"][service]["command"]
    assert command[0] == "masterlinc"
    words = tuple(w for w in command[1:] if not w.startswith("-"))
    paths = _cli_paths()
    assert any(words[: len(p)] == p for p in paths if p), f"{service}: `{' '.join(command)}` is not a CLI command"


def test_no_secret_is_written_into_compose() -> None:
    text = (ROOT / "compose.yaml").read_text()
    assert "CLIENT_SECRET: ${" in text
    assert "POSTGRES_PASSWORD: ${" in text
