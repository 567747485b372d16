"""The MCP facade (issue 10): what assistants see of the hub. Every tool goes through the bus and the worker (D§7).

Layout: ``server`` (tools and resources over commands and queries), ``backend`` (the bus side: commands, queries,
call view, quotas), ``live`` (call legs, resource-updated notifications shared over NATS, 2025-era subscriptions),
``http`` (bearer scopes, Origin checks), ``tokens`` (hashed token store), ``clients`` (client configs), ``app`` (the
entry points the CLI wires), ``bench`` (round-trip benchmark).
"""

from hub.mcp.app import config_print, config_write, serve, token_create, token_list, token_revoke
from hub.mcp.backend import Backend
from hub.mcp.clients import CLIENTS, ConfigTarget
from hub.mcp.server import Facade, FacadeConfig, build_server
from hub.mcp.tokens import Scope, TokenStore

__all__ = [
    "CLIENTS",
    "Backend",
    "ConfigTarget",
    "Facade",
    "FacadeConfig",
    "Scope",
    "TokenStore",
    "build_server",
    "config_print",
    "config_write",
    "serve",
    "token_create",
    "token_list",
    "token_revoke",
]
