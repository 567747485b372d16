"""MCP client configuration: what each assistant client needs to start or reach the facade, and a safe merge.

Where each client keeps its servers (default ``--write`` path) and under which key:

- claude-desktop: ``claude_desktop_config.json``, key ``mcpServers``. macOS
  ``~/Library/Application Support/Claude/``, Windows ``%APPDATA%\\Claude\\``. Linux ``~/.config/Claude/`` is
  UNVERIFIED (there is no official Linux build).
- claude-code: ``.mcp.json`` in the project directory (project scope), key ``mcpServers``; HTTP entries carry
  ``"type": "http"``.
- cursor: ``~/.cursor/mcp.json`` (global; ``.cursor/mcp.json`` per project), key ``mcpServers``.
- gemini: ``~/.gemini/settings.json`` (other settings kept), key ``mcpServers``; HTTP entries use ``httpUrl``.
- copilot (VS Code): ``.vscode/mcp.json`` in the workspace, key ``servers``; entries carry ``type``.
- rovodev: ``~/.rovodev/mcp.json``, key ``mcpServers``: UNVERIFIED, path and format assumed to follow the common
  ``mcpServers`` shape; check Atlassian's Rovo Dev documentation before relying on it.

Stdio entries run ``masterlinc mcp serve --transport stdio``; HTTP entries carry the URL and an
``Authorization: Bearer`` header. ``--write`` keeps every other server and setting, keeps a timestamped backup of
the previous file, and leaves the file readable by its owner only (it may hold a token).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

SERVER_NAME = "masterlinc"


@dataclass(frozen=True)
class ClientInfo:
    name: str
    servers_key: str
    verified: bool
    note: str = ""


CLIENTS: dict[str, ClientInfo] = {
    "claude-desktop": ClientInfo("Claude Desktop", "mcpServers", True),
    "claude-code": ClientInfo("Claude Code", "mcpServers", True, "project scope: .mcp.json in the project directory"),
    "cursor": ClientInfo("Cursor", "mcpServers", True),
    "gemini": ClientInfo("Gemini CLI", "mcpServers", True),
    "copilot": ClientInfo("GitHub Copilot in VS Code", "servers", True, "workspace file .vscode/mcp.json"),
    "rovodev": ClientInfo("Rovo Dev CLI", "mcpServers", False, "unverified path and format"),
}


@dataclass(frozen=True, kw_only=True)
class ConfigTarget:
    """How the client reaches the facade."""

    transport: Literal["stdio", "http"] = "stdio"
    command: str = "masterlinc"
    pbx_id: str | None = None
    profile: str = "full"
    env: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    token: str | None = None

    def args(self) -> list[str]:
        out = ["mcp", "serve", "--transport", "stdio"]
        if self.pbx_id:
            out += ["--pbx", self.pbx_id]
        if self.profile != "full":
            out += ["--profile", self.profile]
        return out


def default_path(client: str, *, home: Path | None = None, cwd: Path | None = None) -> Path:
    home = home or Path.home()
    cwd = cwd or Path.cwd()
    if client == "claude-desktop":
        if sys.platform == "darwin":
            return home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
        if sys.platform == "win32":
            return (
                Path(os.environ.get("APPDATA", home / "AppData" / "Roaming")) / "Claude" / "claude_desktop_config.json"
            )
        return home / ".config" / "Claude" / "claude_desktop_config.json"
    if client == "claude-code":
        return cwd / ".mcp.json"
    if client == "cursor":
        return home / ".cursor" / "mcp.json"
    if client == "gemini":
        return home / ".gemini" / "settings.json"
    if client == "copilot":
        return cwd / ".vscode" / "mcp.json"
    if client == "rovodev":
        return home / ".rovodev" / "mcp.json"
    raise ValueError(f"unknown client {client!r}; known: {', '.join(CLIENTS)}")


def server_entry(client: str, target: ConfigTarget) -> dict[str, Any]:
    """The one entry for the masterlinc server in ``client``'s format."""
    if client not in CLIENTS:
        raise ValueError(f"unknown client {client!r}; known: {', '.join(CLIENTS)}")
    if target.transport == "stdio":
        entry: dict[str, Any] = {"command": target.command, "args": target.args()}
        if target.env:
            entry["env"] = dict(target.env)
        if client == "copilot":
            entry = {"type": "stdio", **entry}
        return entry
    if not target.url:
        raise ValueError("an HTTP config needs the server's URL (e.g. http://127.0.0.1:8765/mcp)")
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    if client == "gemini":
        entry = {"httpUrl": target.url}
    elif client in ("claude-code", "copilot"):
        entry = {"type": "http", "url": target.url}
    else:
        entry = {"url": target.url}
    if headers:
        entry["headers"] = headers
    return entry


def render_config(client: str, target: ConfigTarget) -> str:
    """The JSON document to paste (only the masterlinc server under the client's key)."""
    info = CLIENTS[client]
    return json.dumps({info.servers_key: {SERVER_NAME: server_entry(client, target)}}, indent=2)


@dataclass(frozen=True)
class WriteResult:
    path: Path
    backup: Path | None


def merge(existing: dict[str, Any], client: str, target: ConfigTarget) -> dict[str, Any]:
    key = CLIENTS[client].servers_key
    servers = existing.get(key, {})
    if not isinstance(servers, dict):
        raise ValueError(f"{key!r} in the existing file is not an object; fix it by hand first")
    return {**existing, key: {**servers, SERVER_NAME: server_entry(client, target)}}


def write_config(client: str, target: ConfigTarget, *, path: Path | None = None) -> WriteResult:
    """Merge the masterlinc entry into the client's file: other servers and settings kept, a backup, mode 0600."""
    path = path or default_path(client)
    existing: dict[str, Any] = {}
    backup: Path | None = None
    if path.exists():
        text = path.read_text()
        if text.strip():
            try:
                loaded = json.loads(text)
            except ValueError as exc:
                raise ValueError(
                    f"{path} is not plain JSON ({exc}); it may contain comments. Merge this by hand:\n"
                    + render_config(client, target)
                ) from None
            if not isinstance(loaded, dict):
                raise ValueError(f"{path} does not hold a JSON object; fix it by hand first")
            existing = loaded
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        backup = path.with_name(f"{path.name}.bak-{stamp}")
        shutil.copy2(path, backup)
        os.chmod(backup, 0o600)
    merged = merge(existing, client, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(merged, fh, indent=2)
            fh.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return WriteResult(path=path, backup=backup)
