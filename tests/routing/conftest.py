"""The agent suite's fixtures: a bus emptied of every stream and bucket, a migrated SQLite database of its own."""

from tests.agents.conftest import db_url, nc

__all__ = ["db_url", "nc"]
