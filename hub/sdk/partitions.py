"""Which replica of an agent reads which partition of the feed: rendezvous hashing over the live replicas.

Every replica computes the same answer from the same membership, so no assignment has to be stored. When a replica
joins or dies only the partitions it gains or held move. Order does not depend on this being instantaneous: each
partition's consumer hands out one event at a time (``max_ack_pending=1``), so even while two replicas briefly both
pull a partition during a change, a call's events are still handled one after another, in order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def _weight(replica: str, partition: int) -> int:
    digest = hashlib.blake2b(f"{replica}\x1f{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(partition: int, replicas: Iterable[str]) -> str | None:
    """The replica that reads ``partition`` (None when there are no replicas)."""
    best: tuple[int, str] | None = None
    for replica in replicas:
        candidate = (_weight(replica, partition), replica)
        if best is None or candidate > best:
            best = candidate
    return None if best is None else best[1]


def owned(me: str, replicas: Iterable[str], partitions: int) -> frozenset[int]:
    """The partitions ``me`` reads among ``replicas`` (``me`` is always counted as a member)."""
    members = sorted({*replicas, me})
    return frozenset(p for p in range(partitions) if owner(p, members) == me)
