"""The CRM logging agent: one record per call (parties, direction, times, ring and talk time, outcome, transfers,
recording, the voice agent's summary), written through an outbox with retries and idempotency to the built-in
``crm_records`` table (default), a signed webhook, or HubSpot's calls API.

``masterlinc agent run crm [--backfill]`` runs it; ``ML_CRM__TARGETS`` (comma-separated) chooses the targets.
"""

from __future__ import annotations

from agents.crm.agent import AGENT_NAME, OBSERVED, CrmAgent, CrmConfig
from agents.crm.delivery import Deliverer, written_event_id
from agents.crm.outbox import CrmStore, Due, RetryPolicy
from agents.crm.record import CallRecord, CallState, Party, RoutingStep, Step, record_id
from agents.crm.targets.base import Attempt, Delivered, DeliveryError, RemoteTarget
from agents.crm.targets.hubspot import HubSpotCalls, HubSpotError, HubSpotTarget
from agents.crm.targets.webhook import WebhookTarget
from hub.sdk import Agent
from hub.sdk.discovery import AgentOptions

__all__ = [
    "AGENT_NAME",
    "OBSERVED",
    "Attempt",
    "CallRecord",
    "CallState",
    "CrmAgent",
    "CrmConfig",
    "CrmStore",
    "Delivered",
    "Deliverer",
    "DeliveryError",
    "Due",
    "HubSpotCalls",
    "HubSpotError",
    "HubSpotTarget",
    "Party",
    "RemoteTarget",
    "RetryPolicy",
    "RoutingStep",
    "Step",
    "WebhookTarget",
    "build",
    "config_from",
    "record_id",
    "written_event_id",
]


def config_from(options: AgentOptions) -> CrmConfig:
    settings = options.settings
    if settings is None:
        return CrmConfig()
    c = settings.crm
    return CrmConfig(
        targets=tuple(c.target_list),
        route_points=tuple(p.client_id for p in settings.pbxs) if c.route_points else (),
        webhook_url=c.webhook_url,
        webhook_secret=c.webhook_secret.get_secret_value() if c.webhook_secret else None,
        hubspot_base_url=c.hubspot_base_url,
        hubspot_token=c.hubspot_token.get_secret_value() if c.hubspot_token else None,
        hubspot_id_property=c.hubspot_id_property,
        hubspot_search_lag_s=c.hubspot_search_lag_s,
        retry=RetryPolicy(base_s=c.retry_base_s, max_s=c.retry_max_s, max_attempts=c.max_attempts),
        request_timeout_s=c.request_timeout_s,
        poll_s=c.poll_s,
        fault_pause_event=c.fault_pause_event,
        fault_pause_s=c.fault_pause_s,
    )


def build(options: AgentOptions) -> Agent:
    """The agent ``masterlinc agent run crm`` starts, configured from ``ML_CRM__*``."""
    return CrmAgent(config_from(options)).agent
