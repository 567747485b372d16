"""Settings: one object, read only at entry points (D§10), split into typed sub-configs passed down.

Sources, highest first: command-line overrides, environment (``ML_*``; ``NATS_URL`` and ``DATABASE_URL`` keep those
names; nested with ``__``, e.g. ``ML_BUS__DUPLICATE_WINDOW_S``), a YAML file named by ``ML_CONFIG``, defaults.
Secrets (``client_secret``) are :class:`pydantic.SecretStr` and may come from a file (``client_secret_file``), so they
never appear in ``repr``, logs or errors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from agents.basma.settings import VoiceConfig
from schemas.commands import PhoneNumber
from schemas.tokens import PbxId, check_pbx_id

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PbxConfig(Section):
    """One 3CX PBX: where it is and the API integration's client credentials (client_id is the route point's DN)."""

    id: PbxId
    base_url: str = Field(description="https://pbx.example.com[:port] (no path)")
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    verify_tls: bool = True
    ca_file: Path | None = None
    park_orbit: str = Field(default="SP0", description="Park = transferto this orbit (unverified on 3CX)")
    pickup_code: str = Field(default="*4", description="Resume = makecall to this code + orbit (unverified on 3CX)")

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: object) -> object:
        return check_pbx_id(value) if isinstance(value, str) else value  # the friendly message, before the pattern

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("base_url must start with https:// (or http:// for a local simulator)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_secret(self) -> PbxConfig:
        if self.client_secret is not None and self.client_secret_file is not None:
            raise ValueError("give client_secret or client_secret_file, not both")
        return self

    def secret(self) -> str:
        """The client secret, read from the file when configured that way. Raises with what to do when missing."""
        if self.client_secret is not None:
            return self.client_secret.get_secret_value()
        if self.client_secret_file is not None:
            try:
                return self.client_secret_file.read_text().strip()
            except OSError as exc:
                raise ValueError(
                    f"pbx {self.id}: cannot read client_secret_file {self.client_secret_file}: {exc.strerror}"
                ) from None
        raise ValueError(f"pbx {self.id}: no client secret; set ML_PBXS__0__CLIENT_SECRET or client_secret_file")


class BusSecurity(Section):
    """How services authenticate to NATS (docs/operations.md lists the subjects each service needs): a
    credentials file (JWT + nkey, NATS's decentralised auth), an nkey seed, a user and password, or a token; TLS
    with a custom CA and a client certificate. Secrets are read from files or SecretStr and never logged."""

    creds_file: Path | None = None
    nkey_seed_file: Path | None = None
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    @model_validator(mode="after")
    def _one_way(self) -> BusSecurity:
        ways = [self.creds_file, self.nkey_seed_file, self.user, self.token]
        if sum(w is not None for w in ways) > 1:
            raise ValueError("give one of creds_file, nkey_seed_file, user/password or token for NATS")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("a NATS client certificate needs both tls_cert_file and tls_key_file")
        return self

    def options(self) -> dict[str, Any]:
        """Keyword arguments for nats-py's ``connect``."""
        out: dict[str, Any] = {}
        if self.creds_file is not None:
            out["user_credentials"] = str(self.creds_file)
        if self.nkey_seed_file is not None:
            out["nkeys_seed"] = str(self.nkey_seed_file)
        if self.user is not None:
            out["user"] = self.user
            out["password"] = self.password.get_secret_value() if self.password else ""
        if self.token is not None:
            out["token"] = self.token.get_secret_value()
        if self.tls_ca_file is not None or self.tls_cert_file is not None:
            import ssl

            context = ssl.create_default_context(cafile=str(self.tls_ca_file) if self.tls_ca_file else None)
            if self.tls_cert_file is not None and self.tls_key_file is not None:
                context.load_cert_chain(str(self.tls_cert_file), str(self.tls_key_file))
            out["tls"] = context
        return out


class BusConfig(Section):
    """JetStream stream limits (created or updated idempotently at start), and how to authenticate."""

    security: BusSecurity = Field(default_factory=BusSecurity)

    events_max_age_s: float = Field(default=7 * 86400, gt=0)
    events_max_bytes: int = Field(default=-1)
    duplicate_window_s: float = Field(default=120, gt=0)
    replicas: int = Field(default=1, ge=1, le=5)
    publish_max_pending: int = Field(default=4000, ge=1)


class RecorderConfig(Section):
    batch_size: int = Field(default=1000, ge=1, le=10000)
    fetch_timeout_s: float = Field(default=0.5, gt=0)
    max_deliver: int = Field(default=10, ge=1)
    retry_backoff_max_s: float = Field(default=10.0, gt=0)
    durable: str = "ml-recorder"
    ack_wait_s: float = Field(default=30.0, gt=0, description="Redelivery delay for a batch a dead recorder held")
    fault_pause_after_write_s: float = Field(
        default=0.0, ge=0, description="Fault injection for tests: pause between commit and ack"
    )


class WorkerSettings(Section):
    token_source: Literal["owner", "own"] = Field(
        default="owner",
        description="owner: ask the ingest leader for the PBX token (D§6: 3CX keeps one token per API client); "
        "own: fetch its own (only with an API client of its own)",
    )
    rate_per_second: int = Field(default=20, ge=0, description="Commands per second per PBX, all workers (0: off)")
    verify_legs: bool = Field(
        default=True,
        description="Read each target leg before acting (D§5: 3CX reuses participant ids); off halves PBX requests",
    )
    ack_wait_s: float = Field(default=30.0, gt=0)
    takeover_grace_s: float = Field(default=5.0, ge=0)
    fault_pause_after_call_s: float = Field(default=0.0, ge=0, description="Fault injection for tests")


class AgentSettings(Section):
    """The agent runtime (``masterlinc agent run``, and the coordinator, which is an agent too)."""

    partitions: int = Field(
        default=32, ge=1, le=256, description="Call partitions of the agent feed; fixed once the feed stream exists"
    )
    lease_s: float = Field(default=10.0, gt=0, description="A claim lasts this long unless renewed (every third)")
    heartbeat_s: float = Field(default=1.0, gt=0, description="Registry heartbeat interval (KV only, never the log)")
    down_after_beats: int = Field(default=3, ge=2, description="Missed beats after which an agent counts as down")
    ack_wait_s: float = Field(default=10.0, gt=0, description="Redelivery delay of an event a dead replica held")
    handler_attempts: int = Field(default=5, ge=1, description="Tries of a failing handler before dead-lettering")
    feed_max_age_s: float = Field(default=86400, gt=0, description="How long the agent feed keeps events")


class CoordinatorSettings(Section):
    """Assignment rules, the safe route, and who may override a lease (checked by the worker)."""

    rules_file: Path | None = Field(default=None, description="YAML or TOML assignment rules (hub.rules format)")
    safe_route: PhoneNumber | None = Field(
        default=None, description="Where a call goes when its owner dies or nobody claims it (queue or operator)"
    )
    safe_routes: dict[PbxId, PhoneNumber] = Field(default_factory=dict, description="Per-PBX safe routes")
    claim_timeout_s: float = Field(default=3.0, gt=0, description="An assigned agent must claim within this time")
    lease_grace_s: float = Field(default=0.5, ge=0, description="Clock-skew allowance before a lease counts as expired")
    override_issuers: list[str] = Field(
        default_factory=lambda: ["mcp:*"],
        description="Issuers (globs) whose override flag the worker honours; the MCP facade sets it for such tokens",
    )
    scan_interval_s: float = Field(default=0.1, gt=0, description="How often leases and assignments are checked")
    compact_every_s: float = Field(
        default=300.0, gt=0, description="How often old delete markers are purged from the per-call KV buckets"
    )

    def safe_route_for(self, pbx_id: str) -> str | None:
        return self.safe_routes.get(pbx_id, self.safe_route)


class RoutingSettings(Section):
    """The routing agent (``masterlinc agent run routing``); ``--rules`` wins over ``rules_file``."""

    rules_file: Path | None = Field(default=None, description="YAML or TOML routing rules (agents/routing/rules.py)")
    watch_interval_s: float = Field(default=1.0, gt=0, description="How often the rule file is checked for changes")
    audio_connect_s: float = Field(default=10.0, gt=0, description="How long a menu waits for the leg's audio stream")


class CrmSettings(Section):
    """The CRM logging agent (``masterlinc agent run crm``): where call records go, and how deliveries are retried."""

    targets: str = Field(
        default="database", description="Where records go, comma-separated: database, webhook, hubspot"
    )
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    hubspot_base_url: str = "https://api.hubapi.com"
    hubspot_token: SecretStr | None = Field(default=None, description="A private app access token")
    hubspot_id_property: str = Field(
        default="masterlinc_record_id",
        description="A custom call property (create it in HubSpot) holding the hub's record id: found before create",
    )
    hubspot_search_lag_s: float = Field(
        default=10.0, ge=0, description="After a create whose answer was lost, search this long before creating again"
    )
    route_points: bool = Field(default=True, description="Answers at the route point do not count as a person's")
    retry_base_s: float = Field(default=1.0, gt=0, description="First retry delay of a failed delivery (doubles)")
    retry_max_s: float = Field(default=300.0, gt=0, description="Longest delay between two delivery attempts")
    max_attempts: int = Field(default=50, ge=1, description="Attempts before a delivery is marked failed")
    request_timeout_s: float = Field(default=10.0, gt=0)
    poll_s: float = Field(default=1.0, gt=0, description="How often the outbox is checked besides new records")
    fault_pause_event: str = Field(default="", description="Fault injection for tests: an event type to pause after")
    fault_pause_s: float = Field(default=0.0, ge=0, description="... for this long, between its commit and its ack")

    @property
    def target_list(self) -> list[str]:
        return [part.strip() for part in self.targets.split(",") if part.strip()]

    @model_validator(mode="after")
    def _targets_complete(self) -> CrmSettings:
        known = {"database", "webhook", "hubspot"}
        unknown = [t for t in self.target_list if t not in known]
        if unknown or not self.target_list:
            raise ValueError(f"ML_CRM__TARGETS is a comma-separated list of database, webhook, hubspot; not {unknown}")
        if "webhook" in self.target_list and (not self.webhook_url or self.webhook_secret is None):
            raise ValueError("the webhook target needs ML_CRM__WEBHOOK_URL and ML_CRM__WEBHOOK_SECRET")
        if "hubspot" in self.target_list and self.hubspot_token is None:
            raise ValueError("the hubspot target needs ML_CRM__HUBSPOT_TOKEN (a private app access token)")
        return self


class IngestConfig(Section):
    """The adapter: how hard it reads the PBX, how long it holds events while NATS is down, and the rows of the
    participant-to-event mapping that 3CX leaves unverified (docs/ingest.md)."""

    connected_on_arrival: Literal["answered", "ringing_then_answered"] = Field(
        default="answered",
        description="A leg first seen Connected (route-point inbound legs arrive so): call.answered alone, or "
        "call.ringing then call.answered",
    )
    call_end_grace_s: float = Field(default=0.5, ge=0, description="A call is over this long after its last leg")
    max_reads_inflight: int = Field(default=8, ge=1, le=256, description="Concurrent REST reads per PBX")
    list_threshold: int = Field(default=3, ge=2, description="Waiting participants of one DN read as one list")
    batch_known_s: float = Field(
        default=0.05, ge=0, description="On a DN with many legs, known legs' re-reads wait this long for a list read"
    )
    outbox_max: int = Field(default=50_000, ge=100, description="Events held while NATS is down (then: resync)")
    leader_lease_s: float = Field(default=10.0, gt=0)
    ping_interval_s: float = Field(default=5.0, gt=0, description="Websocket ping (3CX's sample: 5 s)")
    reconnect_max_s: float = Field(default=30.0, gt=0, description="Cap of the reconnect backoff")
    reappear_window_s: float = Field(default=3600.0, ge=0, description="A 3CX callid back within this is the same call")
    persist_interval_s: float = Field(default=0.2, gt=0, description="How often acknowledged state is saved to KV")
    presence_interval_s: float = Field(default=5.0, gt=0, description="XAPI presence poll (XAPI has no push)")
    chat_interval_s: float = Field(default=5.0, gt=0, description="XAPI chat-history poll")
    history_interval_s: float = Field(default=30.0, gt=0, description="XAPI-only mode: call-history poll")
    reconcile_delay_s: float = Field(default=1.0, ge=0, description="Wait before reading history after an outage")
    modes_probe_s: float = Field(default=60.0, gt=0, description="Re-check which PBX APIs are enabled")


class MessagingConfig(Section):
    """Where send_message goes: nowhere (not_supported), the log only, or a signed webhook."""

    provider: Literal["none", "log", "webhook"] = "none"
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None

    @model_validator(mode="after")
    def _webhook_complete(self) -> MessagingConfig:
        if self.provider == "webhook" and (not self.webhook_url or self.webhook_secret is None):
            raise ValueError("the webhook provider needs ML_MESSAGING__WEBHOOK_URL and ML_MESSAGING__WEBHOOK_SECRET")
        return self


class HttpConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ML_", env_nested_delimiter="__", extra="forbid", frozen=True, populate_by_name=True
    )

    nats_url: str | None = Field(default=None, validation_alias=AliasChoices("NATS_URL", "ML_NATS_URL", "nats_url"))
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "ML_DATABASE_URL", "database_url")
    )
    data_dir: Path = Field(default=Path(".masterlinc"))
    recordings_path: Path | None = Field(
        default=None, validation_alias=AliasChoices("ML_RECORDINGS_DIR", "recordings_dir", "recordings_path")
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    pbxs: list[PbxConfig] = Field(default_factory=list)
    bus: BusConfig = Field(default_factory=BusConfig)
    recorder: RecorderConfig = Field(default_factory=RecorderConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    messaging: MessagingConfig = Field(default_factory=MessagingConfig)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    agents: AgentSettings = Field(default_factory=AgentSettings)
    coordinator: CoordinatorSettings = Field(default_factory=CoordinatorSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    crm: CrmSettings = Field(default_factory=CrmSettings)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    voice: VoiceConfig = Field(default_factory=VoiceConfig, description="Basma, the voice agent (agents/basma)")

    @field_validator("pbxs", mode="before")
    @classmethod
    def _indexed_list(cls, value: Any) -> Any:
        """``ML_PBXS__0__ID=...`` arrives as {"0": {...}}: turn index keys into a list in index order."""
        if isinstance(value, dict) and all(str(k).isdigit() for k in value):
            return [value[k] for k in sorted(value, key=lambda k: int(k))]
        return value

    @field_validator("nats_url")
    @classmethod
    def _nats(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("nats://", "tls://", "ws://", "wss://")):
            raise ValueError("NATS_URL must look like nats://host:4222 (or tls://, ws://, wss://)")
        return value

    @field_validator("database_url")
    @classmethod
    def _db(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith(("postgresql://", "postgres://")):
            return "postgresql+asyncpg://" + value.split("://", 1)[1]
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "DATABASE_URL must be a SQLAlchemy async URL: sqlite+aiosqlite:///path.db or "
                "postgresql+asyncpg://user@host/db"
            )
        return value

    @model_validator(mode="after")
    def _unique_pbx(self) -> Settings:
        ids = [p.id for p in self.pbxs]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"pbx ids must be unique; repeated: {', '.join(dupes)}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("ML_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    # -- derived values used by the entry points

    def sqlite_default_url(self) -> str:
        return f"sqlite+aiosqlite:///{(self.data_dir / 'events.db').resolve()}"

    def effective_database_url(self) -> str:
        return self.database_url or self.sqlite_default_url()

    def recordings_dir(self) -> Path:
        """Where hub-side recordings are written (``ML_RECORDINGS_DIR``, default ``<data_dir>/recordings``)."""
        return (self.recordings_path or self.data_dir / "recordings").resolve()

    def effective_nats_url(self) -> str:
        return self.nats_url or DEFAULT_NATS_URL

    def pbx(self, pbx_id: str) -> PbxConfig:
        for pbx in self.pbxs:
            if pbx.id == pbx_id:
                return pbx
        known = ", ".join(p.id for p in self.pbxs) or "none configured"
        raise KeyError(f"unknown pbx {pbx_id!r}; configured: {known}")


def load_settings(**overrides: Any) -> Settings:
    """Read settings at an entry point; overrides (e.g. from CLI flags) win over the environment."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)
