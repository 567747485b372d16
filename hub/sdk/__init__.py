"""The agent SDK: the contract (events, commands, queries, subjects) and a client for commands and queries."""

from hub.sdk.client import CommandClient
from schemas import *  # noqa: F403 - the SDK re-exports the whole contract on purpose
from schemas import __all__ as _contract

__all__ = ["CommandClient", *_contract]
