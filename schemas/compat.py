"""Compatibility of the current contract with a released snapshot (``schemas/snapshots/<version>.json``).

Rules, per event type in the snapshot:
- the type still exists;
- same version: every property it had keeps the same schema and no new property is required (additions are fine);
- higher version: an upcaster path leads from the snapshot's version to the current one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.events import EVENT_CLASSES
from schemas.upcast import has_path

SNAPSHOT_DIR = Path(__file__).parent / "snapshots"


def snapshot_document() -> dict[str, Any]:
    """What a release freezes: each event type's version and JSON Schema."""
    return {
        name: {"version": cls.VERSION, "schema": cls.model_json_schema(by_alias=True)}
        for name, cls in sorted(EVENT_CLASSES.items())
    }


def latest_snapshot() -> tuple[str, dict[str, Any]]:
    files = sorted(SNAPSHOT_DIR.glob("*.json"), key=lambda p: tuple(int(x) for x in p.stem.split(".")))
    if not files:
        raise FileNotFoundError(f"no released snapshot in {SNAPSHOT_DIR}")
    return files[-1].stem, json.loads(files[-1].read_text())


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        resolved: dict[str, Any] = schema.get("$defs", {})[ref.rsplit("/", 1)[1]]
        return resolved
    return node


def _compare_object(
    path: str, old_root: dict[str, Any], old: dict[str, Any], new_root: dict[str, Any], new: dict[str, Any]
) -> list[str]:
    problems: list[str] = []
    old = _resolve(old_root, old)
    new = _resolve(new_root, new)
    old_props: dict[str, Any] = old.get("properties", {})
    new_props: dict[str, Any] = new.get("properties", {})
    for name, old_prop in old_props.items():
        if name not in new_props:
            problems.append(f"{path}.{name} was removed")
            continue
        o, n = _resolve(old_root, old_prop), _resolve(new_root, new_props[name])
        if "properties" in o or "properties" in n:
            problems.extend(_compare_object(f"{path}.{name}", old_root, o, new_root, n))
        elif json.dumps(o, sort_keys=True) != json.dumps(n, sort_keys=True):
            problems.append(f"{path}.{name} changed its schema")
    added_required = set(new.get("required", [])) - set(old.get("required", []))
    for name in sorted(added_required):
        problems.append(f"{path}.{name} is newly required")
    return problems


def check_compatibility(snapshot: dict[str, Any]) -> list[str]:
    """Problems that make the current contract unable to read events written under ``snapshot``."""
    problems: list[str] = []
    for name, entry in sorted(snapshot.items()):
        cls = EVENT_CLASSES.get(name)
        if cls is None:
            problems.append(f"{name}: the type was removed")
            continue
        old_version = int(entry["version"])
        if old_version > cls.VERSION:
            problems.append(f"{name}: version went down from {old_version} to {cls.VERSION}")
        elif old_version < cls.VERSION:
            if not has_path(name, old_version):
                problems.append(f"{name}: v{old_version} -> v{cls.VERSION} has no upcaster path")
        else:
            current = cls.model_json_schema(by_alias=True)
            old = entry["schema"]
            problems.extend(f"{name}: {p}" for p in _compare_object("", old, old, current, current))
    return problems
