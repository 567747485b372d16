"""NATS subjects, derived from the models (D§3). Nothing else in the hub writes a subject by hand.

| what        | subject                                          | stream      |
|-------------|--------------------------------------------------|-------------|
| events      | ml.evt.<pbx>.<domain>.<key>.<name>               | ML_EVENTS   |
| commands    | ml.cmd.<pbx>.<name>                              | ML_COMMANDS |
| queries     | ml.qry.<pbx>.<name>                              | (req/reply) |
| token       | ml.int.<pbx>.token                               | (req/reply) |
| audio tap   | ml.int.<pbx>.audio.<call>.<participant>          | (core)      |
| recording   | ml.int.<pbx>.recording.<recording id>            | (req/reply) |
| sandbox     | ml.sbx.<run>.evt.<pbx>.<domain>.<key>.<name>     | (core)      |
| dead letter | ml.dlq.<source>                                  | ML_DLQ      |
| agent feed  | ml.feed.<partition>.<pbx>.<domain>.<key>.<name>  | ML_FEED     |

The agent feed is ML_EVENTS copied by the server into call partitions (a stream source with a subject transform):
the partition is ``partition(N)`` of the key token, so every event about one call lands in one partition.
"""

from __future__ import annotations

from schemas.commands import CommandBase, QueryBase
from schemas.events import DOMAINS, EventBase
from schemas.tokens import check_pbx_id, check_token

PREFIX = "ml"
EVENTS_STREAM = "ML_EVENTS"
COMMANDS_STREAM = "ML_COMMANDS"
DLQ_STREAM = "ML_DLQ"
FEED_STREAM = "ML_FEED"

EVENTS_ALL = f"{PREFIX}.evt.>"
COMMANDS_ALL = f"{PREFIX}.cmd.>"
DLQ_ALL = f"{PREFIX}.dlq.>"

ANY = "*"


def event_subject(event: EventBase) -> str:
    """``ml.evt.<pbx>.<domain>.<key>.<name>`` for an event."""
    key = check_token(event.subject_key(), "subject key")
    return f"{PREFIX}.evt.{event.pbx_id}.{event.DOMAIN}.{key}.{event.NAME}"


def sandbox_subject(run: str, original: str) -> str:
    """The replay sandbox subject for an original event subject."""
    check_token(run, "replay run id")
    if not original.startswith(f"{PREFIX}.evt."):
        raise ValueError(f"not an event subject: {original!r}")
    return f"{PREFIX}.sbx.{run}.{original[len(PREFIX) + 1 :]}"


def command_subject(command: CommandBase | type[CommandBase], pbx_id: str | None = None) -> str:
    pbx = command.pbx_id if isinstance(command, CommandBase) else check_pbx_id(pbx_id or "")
    return f"{PREFIX}.cmd.{pbx}.{command.NAME}"


def query_subject(query: QueryBase | type[QueryBase], pbx_id: str | None = None) -> str:
    pbx = query.pbx_id if isinstance(query, QueryBase) else check_pbx_id(pbx_id or "")
    return f"{PREFIX}.qry.{pbx}.{query.NAME}"


def commands_filter(pbx_id: str | None = None) -> str:
    return f"{PREFIX}.cmd.{check_pbx_id(pbx_id) if pbx_id else ANY}.*"


def queries_filter(pbx_id: str | None = None) -> str:
    return f"{PREFIX}.qry.{check_pbx_id(pbx_id) if pbx_id else ANY}.*"


def token_subject(pbx_id: str) -> str:
    return f"{PREFIX}.int.{check_pbx_id(pbx_id)}.token"


def audio_tap_subject(pbx_id: str, call_id: str, participant_id: int) -> str:
    """The hub's own outgoing audio on one leg (core NATS, never recorded): the hub-side recorder mixes it in."""
    return f"{PREFIX}.int.{check_pbx_id(pbx_id)}.audio.{check_token(call_id, 'call id')}.{int(participant_id)}"


def recording_control_subject(pbx_id: str, recording_id: str) -> str:
    """Request/reply to the worker that holds a hub-side recording (any worker may take stop_recording)."""
    return f"{PREFIX}.int.{check_pbx_id(pbx_id)}.recording.{check_token(recording_id, 'recording id')}"


def dlq_subject(source: str) -> str:
    return f"{PREFIX}.dlq.{check_token(source, 'dead-letter source')}"


def event_filter(
    *,
    pbx_id: str | None = None,
    event_type: type[EventBase] | None = None,
    domain: str | None = None,
    key: str | None = None,
    prefix: str | None = None,
) -> str:
    """A filter subject; any part left out is a wildcard. ``prefix`` replaces ``ml.evt`` (e.g. a sandbox run)."""
    if event_type is not None and domain is not None and domain != event_type.DOMAIN:
        raise ValueError(f"domain {domain!r} contradicts event type {event_type.type_name()!r}")
    if domain is not None and domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    pbx = check_pbx_id(pbx_id) if pbx_id else ANY
    dom = event_type.DOMAIN if event_type else (domain or ANY)
    k = check_token(key, "key") if key else ANY
    name = event_type.NAME if event_type else ANY
    head = prefix or f"{PREFIX}.evt"
    if pbx == ANY and dom == ANY and k == ANY and name == ANY:
        return f"{head}.>"
    return f"{head}.{pbx}.{dom}.{k}.{name}"


def call_filter(call_id: str, pbx_id: str | None = None) -> str:
    """Everything about one call: ``ml.evt.*.*.<call_id>.*``."""
    return event_filter(pbx_id=pbx_id, key=call_id)


def type_filter(event_type: type[EventBase], pbx_id: str | None = None) -> str:
    """One event type: e.g. ``ml.evt.*.call.*.ended``."""
    return event_filter(pbx_id=pbx_id, event_type=event_type)


def pbx_filter(pbx_id: str) -> str:
    """Everything from one PBX: ``ml.evt.<pbx>.>``."""
    return f"{PREFIX}.evt.{check_pbx_id(pbx_id)}.>"


def parse_event_subject(subject: str) -> tuple[str, str, str, str]:
    """(pbx, domain, key, name) of an event subject; ValueError when it is not one."""
    parts = subject.split(".")
    if len(parts) == 6 and parts[0] == PREFIX and parts[1] == "evt":
        return parts[2], parts[3], parts[4], parts[5]
    if len(parts) == 8 and parts[0] == PREFIX and parts[1] == "sbx" and parts[3] == "evt":
        return parts[4], parts[5], parts[6], parts[7]
    raise ValueError(f"not an event subject: {subject!r}")


def feed_prefix(partition: int) -> str:
    """The head of one partition's subjects in the agent feed, for :func:`event_filter`'s ``prefix``."""
    if not isinstance(partition, int) or partition < 0:
        raise ValueError(f"a partition is a non-negative integer, not {partition!r}")
    return f"{PREFIX}.feed.{partition}"


def feed_transform(partitions: int) -> tuple[str, str]:
    """(source, destination) of the subject transform that fills the agent feed: the key token (the 3rd wildcard,
    the call id for anything about a call) is hashed by the server into one of ``partitions`` partitions."""
    if not 1 <= partitions <= 1024:
        raise ValueError(f"partitions must be 1..1024, not {partitions}")
    source = f"{PREFIX}.evt.{ANY}.{ANY}.{ANY}.{ANY}"
    destination = (
        f"{PREFIX}.feed.{{{{partition({partitions},3)}}}}"
        ".{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}.{{wildcard(4)}}"
    )
    return source, destination


def feed_partitions(destination: str) -> int | None:
    """The partition count of a feed transform destination (None when it is not one)."""
    head = f"{PREFIX}.feed.{{{{partition("
    if not destination.startswith(head):
        return None
    try:
        return int(destination[len(head) :].split(",", 1)[0])
    except ValueError:
        return None
