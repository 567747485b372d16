"""Token store (hashed, revocable, shown once) and client config writers (merged into fixture files)."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from hub.config import Settings
from hub.mcp.app import config_print, token_create, token_list, token_revoke
from hub.mcp.clients import CLIENTS, ConfigTarget, default_path, write_config
from hub.mcp.tokens import TokenStore, expand_scopes

FIXTURES = Path(__file__).parent / "fixtures"


def test_tokens_are_stored_hashed_with_mode_0600_and_verify_until_revoked(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    created = store.create(name="desk", scopes=["control"], dial_quota_per_day=5)
    secret = created.token.rsplit("_", 1)[1]
    raw = (tmp_path / "tokens.json").read_text()
    assert secret not in raw and created.token not in raw
    assert stat.S_IMODE((tmp_path / "tokens.json").stat().st_mode) == 0o600
    principal = store.verify(created.token)
    assert principal is not None and principal.issuer == f"mcp:{created.record.id}"
    assert principal.scopes == {"read", "control"} and principal.dial_quota_per_day == 5
    assert store.verify(created.token[:-1] + ("A" if created.token[-1] != "A" else "B")) is None
    assert store.verify("Bearer nonsense") is None
    reader = TokenStore(tmp_path / "tokens.json")  # a running server's view of the same file
    assert reader.verify(created.token) is not None
    store.revoke("desk")
    assert reader.verify(created.token) is None


def test_scopes_expand_and_unknown_ones_are_named() -> None:
    assert expand_scopes(["override"]) == ["read", "control", "override"]
    with pytest.raises(ValueError, match="use one of: read, control, override"):
        expand_scopes(["admin"])


def test_the_token_commands_print_once_list_and_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(data_dir=tmp_path)
    assert token_create(settings, name="bot", scopes=["read"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("mlt_")
    assert token_list(settings, as_json=True) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in listed] == ["bot"] and "hash" not in listed[0] and token not in json.dumps(listed)
    assert token_revoke(settings, listed[0]["id"]) == 0
    assert token_revoke(settings, "nope") == 1
    assert "no token with id or name 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_write_merges_into_the_clients_file_keeping_the_rest(client: str, tmp_path: Path) -> None:
    path = tmp_path / f"{client}.json"
    shutil.copy(FIXTURES / f"{client}.json", path)
    before = json.loads(path.read_text())
    result = write_config(client, ConfigTarget(pbx_id="main"), path=path)
    after = json.loads(path.read_text())
    key = CLIENTS[client].servers_key
    assert after[key]["filesystem"] == before[key]["filesystem"]
    assert {k: v for k, v in after.items() if k != key} == {k: v for k, v in before.items() if k != key}
    entry = after[key]["masterlinc"]
    assert entry["command"] == "masterlinc"
    assert entry["args"] == ["mcp", "serve", "--transport", "stdio", "--pbx", "main"]
    assert ("type" in entry) == (client == "copilot")
    assert result.backup is not None and json.loads(result.backup.read_text()) == before
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_config(client, ConfigTarget(pbx_id="other"), path=path)  # a second write replaces our entry only
    again = json.loads(path.read_text())[key]
    assert set(again) == {"filesystem", "masterlinc"} and again["masterlinc"]["args"][-1] == "other"


def test_http_entries_follow_each_clients_format(tmp_path: Path) -> None:
    target = ConfigTarget(transport="http", url="http://127.0.0.1:8765/mcp", token="mlt_x_y")
    entries = {}
    for client in CLIENTS:
        path = tmp_path / f"{client}.json"
        write_config(client, target, path=path)
        entries[client] = json.loads(path.read_text())[CLIENTS[client].servers_key]["masterlinc"]
    assert entries["gemini"] == {"httpUrl": target.url, "headers": {"Authorization": "Bearer mlt_x_y"}}
    assert entries["copilot"]["type"] == "http" and entries["claude-code"]["type"] == "http"
    assert entries["cursor"] == {"url": target.url, "headers": {"Authorization": "Bearer mlt_x_y"}}


def test_a_file_that_is_not_plain_json_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text('{\n  // my servers\n  "servers": {}\n}\n')
    with pytest.raises(ValueError, match="Merge this by hand"):
        write_config("copilot", ConfigTarget(), path=path)
    assert path.read_text().startswith("{\n  // my servers")


def test_default_paths_and_printed_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert default_path("cursor", home=tmp_path) == tmp_path / ".cursor" / "mcp.json"
    assert default_path("gemini", home=tmp_path) == tmp_path / ".gemini" / "settings.json"
    assert default_path("claude-code", cwd=tmp_path) == tmp_path / ".mcp.json"
    assert default_path("copilot", cwd=tmp_path) == tmp_path / ".vscode" / "mcp.json"
    assert config_print("copilot", ConfigTarget()) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["servers"]["masterlinc"]["type"] == "stdio"
    assert config_print("notepad", ConfigTarget()) == 2
