"""``python -m hub.mcp serve|token|config``: the same entry points ``masterlinc mcp`` wires, without typer."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from hub.config import load_settings
from hub.mcp.app import config_print, config_write, serve, token_create, token_list, token_revoke
from hub.mcp.clients import CLIENTS, ConfigTarget


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.mcp")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_serve = sub.add_parser("serve")
    p_serve.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    p_serve.add_argument("--host")
    p_serve.add_argument("--port", type=int)
    p_serve.add_argument("--profile", default="full")
    p_serve.add_argument("--pbx")
    p_serve.add_argument("--allow-origin", action="append", default=[])
    p_token = sub.add_parser("token")
    tsub = p_token.add_subparsers(dest="token_cmd", required=True)
    p_create = tsub.add_parser("create")
    p_create.add_argument("--name", default="")
    p_create.add_argument("--scope", action="append", default=[])
    p_create.add_argument("--dial-quota", type=int)
    p_list = tsub.add_parser("list")
    p_list.add_argument("--json", action="store_true")
    p_revoke = tsub.add_parser("revoke")
    p_revoke.add_argument("id")
    p_config = sub.add_parser("config")
    p_config.add_argument("--client", required=True, choices=sorted(CLIENTS))
    p_config.add_argument("--write", action="store_true")
    p_config.add_argument("--path", type=Path)
    p_config.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    p_config.add_argument("--url")
    p_config.add_argument("--token")
    p_config.add_argument("--pbx")
    p_config.add_argument("--profile", default="full")
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.cmd == "serve":
        return serve(
            settings,
            args.transport,
            args.host,
            args.port,
            args.profile,
            pbx_id=args.pbx,
            allowed_origins=args.allow_origin,
        )
    if args.cmd == "token":
        if args.token_cmd == "create":  # noqa: S105 - a subcommand name, not a secret
            return token_create(
                settings, name=args.name, scopes=args.scope or ["read"], dial_quota_per_day=args.dial_quota
            )
        if args.token_cmd == "list":  # noqa: S105 - a subcommand name, not a secret
            return token_list(settings, as_json=args.json)
        return token_revoke(settings, args.id)
    target = ConfigTarget(
        transport=args.transport, pbx_id=args.pbx, profile=args.profile, url=args.url, token=args.token
    )
    if args.write:
        return config_write(args.client, target, path=args.path)
    return config_print(args.client, target)


if __name__ == "__main__":
    sys.exit(main())
