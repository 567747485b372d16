"""The agent suite's fixtures: a bus emptied of every stream and bucket, a second connection."""

from tests.agents.conftest import nc, nc2

__all__ = ["nc", "nc2"]
