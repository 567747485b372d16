"""The agent SDK: declare an agent, handle each call's events in order, own calls, send commands.

The few names an agent author uses: :class:`Agent` (declare, ``@agent.on(...)``, ``@agent.on_assigned``,
``@agent.on_handoff``, ``@agent.on_batch(...)`` with :class:`Batch`),
:class:`Context` (``claim``, ``release``, ``handoff``, ``send``, ``query``, ``publish``,
``transaction``), and the contract it re-exports: every event class, command class and their arguments.
``masterlinc agent run NAME`` runs an agent; :class:`AgentRuntime` runs one in-process (tests, embedding).
See docs/agents.md for a whole agent on one page.
"""

import schemas as _schemas
from hub.sdk.agent import Agent, issuer
from hub.sdk.batch import Batch
from hub.sdk.client import CommandClient
from hub.sdk.context import Context, NotOwnerError
from hub.sdk.filters import EventFilter
from hub.sdk.runtime import AgentRuntime, RuntimeOptions
from hub.sdk.tracking import AlreadyHandled, Tracked, Tracker
from schemas import *  # noqa: F403 - the SDK re-exports the whole contract on purpose
from schemas import commands, events
from schemas.commands import (
    DestinationArgs,
    DivertArgs,
    MakeCallArgs,
    NoArgs,
    ResumeArgs,
    SendMessageArgs,
    SetPresenceArgs,
    TransferArgs,
)
from schemas.events import (
    AgentAssigned,
    AgentClaimedCall,
    AgentHandedOff,
    AgentLeaseExpired,
    AgentRegistered,
    AgentReleasedCall,
    CallAnswered,
    CallCreated,
    CallDiverted,
    CallEnded,
    CallLegRemoved,
    CallParked,
    CallResumed,
    CallRinging,
    CallTransferred,
    CommandAccepted,
    CommandFailed,
    CommandSucceeded,
    CrmRecordWritten,
    DtmfReceived,
    LinkConnected,
    LinkDisconnected,
    LinkResynced,
    MessageReceived,
    ParticipantUpdated,
    PresenceChanged,
    QueueAgentLoggedIn,
    QueueAgentLoggedOut,
    RecordingStarted,
    RecordingStopped,
    RoutingDecided,
    VoiceTranscript,
    VoiceTurn,
)

__all__ = [
    "Agent",
    "AgentAssigned",
    "AgentClaimedCall",
    "AgentHandedOff",
    "AgentLeaseExpired",
    "AgentRegistered",
    "AgentReleasedCall",
    "AgentRuntime",
    "AlreadyHandled",
    "Batch",
    "CallAnswered",
    "CallCreated",
    "CallDiverted",
    "CallEnded",
    "CallLegRemoved",
    "CallParked",
    "CallResumed",
    "CallRinging",
    "CallTransferred",
    "CommandAccepted",
    "CommandClient",
    "CommandFailed",
    "CommandSucceeded",
    "Context",
    "CrmRecordWritten",
    "DestinationArgs",
    "DivertArgs",
    "DtmfReceived",
    "EventFilter",
    "LinkConnected",
    "LinkDisconnected",
    "LinkResynced",
    "MakeCallArgs",
    "MessageReceived",
    "NoArgs",
    "NotOwnerError",
    "ParticipantUpdated",
    "PresenceChanged",
    "QueueAgentLoggedIn",
    "QueueAgentLoggedOut",
    "RecordingStarted",
    "RecordingStopped",
    "ResumeArgs",
    "RoutingDecided",
    "RuntimeOptions",
    "SendMessageArgs",
    "SetPresenceArgs",
    "Tracked",
    "Tracker",
    "TransferArgs",
    "VoiceTranscript",
    "VoiceTurn",
    "commands",
    "events",
    "issuer",
]
__all__ += _schemas.__all__
