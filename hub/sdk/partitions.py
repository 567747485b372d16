"""Which replica of an agent reads which partition of the feed: rendezvous hashing over the live replicas, with each
replica's share capped so the split is even.

Every replica computes the same answer from the same membership, so no assignment has to be stored. Plain rendezvous
hashing moves only a joining or dying replica's share, but its split is only even on average: with two replicas and 8
partitions one replica gets all of them once in 128 memberships, and with 32 partitions a 22/10 split is common. So
the (replica, partition) pairs are taken in order of their hash weight, highest first, and a pair is skipped when its
replica already holds its share (``partitions // replicas``, one more for the first ``partitions % replicas`` replicas
to fill up). Shares then differ by at most one; a membership change moves a few partitions between the remaining
replicas too, which is safe: order does not depend on ownership changing instantly, because each partition's
consumer hands out one event at a time (``max_ack_pending=1``), so even while two replicas briefly both pull a
partition, a call's events are still handled one after another, in order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def _weight(replica: str, partition: int) -> int:
    digest = hashlib.blake2b(f"{replica}\x1f{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assignment(replicas: Iterable[str], partitions: int) -> dict[int, str]:
    """Each partition's replica (empty when there are no replicas)."""
    members = sorted(set(replicas))
    if not members:
        return {}
    share, extra = divmod(partitions, len(members))
    pairs = sorted(((_weight(r, p), r, p) for r in members for p in range(partitions)), reverse=True)
    held: dict[str, int] = dict.fromkeys(members, 0)
    above_share = 0  # replicas that took one partition more than the share
    owners: dict[int, str] = {}
    for _, replica, partition in pairs:
        if partition in owners:
            continue
        count = held[replica]
        if count == share + 1 or (count == share and above_share == extra):
            continue  # this replica is full
        if count == share:
            above_share += 1
        held[replica] = count + 1
        owners[partition] = replica
    return owners


def owner(partition: int, replicas: Iterable[str], partitions: int) -> str | None:
    """The replica that reads ``partition`` of ``partitions`` (None when there are no replicas)."""
    return assignment(replicas, partitions).get(partition)


def owned(me: str, replicas: Iterable[str], partitions: int) -> frozenset[int]:
    """The partitions ``me`` reads among ``replicas`` (``me`` is always counted as a member)."""
    return frozenset(p for p, r in assignment([*replicas, me], partitions).items() if r == me)
