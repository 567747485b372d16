"""The ``masterlinc`` command (D§1). Each command reads settings at its entry point and hands typed config down.

Heavy imports happen inside the commands so ``masterlinc --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from hub.cli_support import fail, settings_or_exit

app = typer.Typer(
    name="masterlinc",
    help="MasterLinc: a 3CX phone system on an event bus, worked by AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
schema_app = typer.Typer(help="The event and command contract.", no_args_is_help=True)
events_app = typer.Typer(help="Read the event log.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters.", no_args_is_help=True)
db_app = typer.Typer(help="The event log database.", no_args_is_help=True)
mcp_app = typer.Typer(help="The MCP facade for assistants.", no_args_is_help=True)
mcp_token_app = typer.Typer(help="MCP bearer tokens.", no_args_is_help=True)
agent_app = typer.Typer(help="Agents.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")
app.add_typer(events_app, name="events")
app.add_typer(dlq_app, name="dlq")
app.add_typer(db_app, name="db")
app.add_typer(mcp_app, name="mcp")
mcp_app.add_typer(mcp_token_app, name="token")
app.add_typer(agent_app, name="agent")
app.add_typer(config_app, name="config")


# --------------------------------------------------------------------------- schema


@schema_app.command("export")
def schema_export(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout")] = None,
) -> None:
    """Print the JSON Schemas of every event, command and query."""
    from schemas.export import contract_document, to_json

    _emit(to_json(contract_document()), out)


@schema_app.command("asyncapi")
def schema_asyncapi(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout")] = None,
) -> None:
    """Print the AsyncAPI 3 document: one channel per event type with its subject parameters."""
    from schemas.export import asyncapi_document, to_json

    _emit(to_json(asyncapi_document()), out)


@schema_app.command("catalogue")
def schema_catalogue(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout")] = None,
) -> None:
    """Print the event catalogue (Markdown): every type with its subject, version, meaning and fields."""
    from schemas.export import catalogue_markdown

    _emit(catalogue_markdown(), out)


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        typer.echo(f"wrote {out}", err=True)


# --------------------------------------------------------------------------- event log


CallOpt = Annotated[list[str] | None, typer.Option("--call", help="A call id (repeatable)")]
TypeOpt = Annotated[list[str] | None, typer.Option("--type", help="An event type such as call.ended (repeatable)")]
PbxOpt = Annotated[str | None, typer.Option("--pbx", help="Only this PBX")]
SinceOpt = Annotated[str | None, typer.Option("--since", help="ISO time or a duration ago: 2026-11-23T10:00Z, 15m, 2h")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="ISO time or a duration ago")]


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Apply the event log's migrations (Postgres or SQLite)."""
    from hub.eventlog.migrate import upgrade

    settings = settings_or_exit()
    url = settings.effective_database_url()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        upgrade(url, revision)
    except Exception as exc:  # alembic and drivers raise many types; the message is what matters here
        fail(f"migration failed on {_safe_url(url)}: {exc}")
    typer.echo(f"event log at {_safe_url(url)} is at {revision}")


@db_app.command("prune")
def db_prune(
    older_than: Annotated[str, typer.Option("--older-than", help="Age such as 90d, 12w or 720h")],
) -> None:
    """Delete events that occurred longer ago than the given age (retention)."""
    from hub.cli_log import run_prune

    run_prune(settings_or_exit(), older_than)


@db_app.command("erase")
def db_erase(
    number: Annotated[str, typer.Option("--number", help="The phone number to erase, as it appears in events")],
) -> None:
    """Privacy request: erase every event and dead letter about one phone number, and report what went."""
    from hub.cli_log import run_erase

    run_erase(settings_or_exit(), number)


@app.command("replay")
def replay_command(
    call: CallOpt = None,
    type_: TypeOpt = None,
    pbx: PbxOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    to_original: Annotated[
        bool, typer.Option("--to-original", help="Publish to the original subjects (agents may act on them)")
    ] = False,
    pace: Annotated[str, typer.Option(help="instant or original")] = "instant",
    speed: Annotated[float, typer.Option(help="With --pace original: 2 plays twice as fast")] = 1.0,
    rate: Annotated[float | None, typer.Option(help="At most this many events per second")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be sent; send nothing")] = False,
) -> None:
    """Replay recorded events: to a sandbox subject tree by default."""
    from hub.cli_log import run_replay

    settings = settings_or_exit()
    if pace not in ("instant", "original"):
        fail(f"--pace must be instant or original, not {pace!r}")
    run_replay(
        settings,
        call_ids=tuple(call or ()),
        types=tuple(type_ or ()),
        pbx_id=pbx,
        since=since,
        until=until,
        to_original=to_original,
        pace=pace,
        speed=speed,
        rate=rate,
        dry_run=dry_run,
    )


@events_app.command("tail")
def events_tail(
    call: CallOpt = None, type_: TypeOpt = None, pbx: PbxOpt = None, since: SinceOpt = None, until: UntilOpt = None
) -> None:
    """Print live events as they arrive on the bus (--since: from the stream's history first; --until: then exit)."""
    from hub.cli_log import run_tail

    run_tail(settings_or_exit(), call_ids=tuple(call or ()), types=tuple(type_ or ()), pbx_id=pbx, since=since,
             until=until)  # fmt: skip


@events_app.command("show")
def events_show(call: Annotated[str, typer.Option("--call", help="The call id")]) -> None:
    """Print one call's timeline from the event log."""
    from hub.cli_log import run_show

    run_show(settings_or_exit(), call)


@dlq_app.command("list")
def dlq_list(
    status: Annotated[str | None, typer.Option(help="open or retried")] = "open",
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
) -> None:
    """List dead letters."""
    from hub.cli_log import run_dlq_list

    run_dlq_list(settings_or_exit(), status, limit)


@dlq_app.command("show")
def dlq_show(letter_id: Annotated[int, typer.Argument(help="Dead letter id (from dlq list)")]) -> None:
    """Show one dead letter with its reason and payload."""
    from hub.cli_log import run_dlq_show

    run_dlq_show(settings_or_exit(), letter_id)


@dlq_app.command("retry")
def dlq_retry(letter_id: Annotated[int, typer.Argument(help="Dead letter id (from dlq list)")]) -> None:
    """Publish a dead letter again to its original subject (after fixing what made it fail)."""
    from hub.cli_log import run_dlq_retry

    run_dlq_retry(settings_or_exit(), letter_id)


def _safe_url(url: str) -> str:
    """A database URL without its credentials, for messages."""
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


# --------------------------------------------------------------------------- bench


@app.command("bench")
def bench(
    names: Annotated[list[str] | None, typer.Argument(help="Benchmarks (or prefixes) to run; all when omitted")] = None,
    quick: Annotated[bool, typer.Option(help="Tiny sizes: checks the harness, figures mean little")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
    list_only: Annotated[bool, typer.Option("--list", help="List the benchmarks and exit")] = False,
) -> None:
    """Run benchmarks: each figure is printed next to a raw baseline measured in the same run."""
    from hub.bench import BenchOptions, all_benchmarks, run_benchmarks
    from hub.bench.report import render_table

    if list_only:
        for name, description in all_benchmarks().items():
            typer.echo(f"{name:28} {description}")
        return
    settings = settings_or_exit()
    options = BenchOptions(quick=quick, nats_url=settings.nats_url, database_url=settings.database_url)
    try:
        results = asyncio.run(run_benchmarks(names or [], options))
    except KeyError as exc:
        fail(str(exc.args[0]))
    if json_out:
        typer.echo(json.dumps([r.as_json() for r in results], indent=2))
    else:
        render_table(results)


@app.command("soak")
def soak(
    minutes: Annotated[float, typer.Option(help="How long the traffic runs")] = 30.0,
    rate: Annotated[float, typer.Option(help="Events per second from the simulator's load driver")] = 200.0,
    fault_every: Annotated[float, typer.Option(help="Seconds between two faults (they rotate)")] = 60.0,
    database_url: Annotated[
        str | None, typer.Option(help="An empty event log to use (default: SQLite in a fresh directory)")
    ] = None,
    check_memory: Annotated[bool, typer.Option(help="Fail when a process's RSS trends up")] = True,
) -> None:
    """Run the whole hub as processes under load with a rotating fault; print samples and the invariants' verdict."""
    import tempfile

    from hub.soak.run import run_soak

    settings = settings_or_exit()
    data_dir = Path(tempfile.mkdtemp(prefix="ml-soak-"))
    typer.echo(f"soak: {minutes} min at {rate} events/s, a fault every {fault_every} s; data in {data_dir}", err=True)
    raise typer.Exit(asyncio.run(run_soak(settings, minutes=minutes, rate=rate, fault_every_s=fault_every,
                                          data_dir=data_dir, database_url=database_url,
                                          check_memory=check_memory)))  # fmt: skip


# --------------------------------------------------------------------------- services


@app.command("up")
def up(
    scenario: Annotated[
        str, typer.Option(help="What the built-in simulator plays: demo, quiet, or a scenario file")
    ] = "demo",
    data_dir: Annotated[Path | None, typer.Option(help="Where the JetStream store and SQLite log live")] = None,
    calls: Annotated[int, typer.Option(help="Stop after this many calls have ended (0 = run until Ctrl-C)")] = 0,
) -> None:
    """Run the whole hub in one process tree with embedded defaults (NATS, SQLite, the 3CX simulator)."""
    from hub.up import run_up, scenario_path

    settings = settings_or_exit(data_dir=data_dir)
    if not settings.pbxs:
        try:
            scenario_path(scenario)
        except ValueError as exc:
            fail(str(exc))
    raise typer.Exit(asyncio.run(run_up(settings, scenario=scenario, calls=calls)))


@app.command("recorder")
def recorder() -> None:
    """Consume ML_EVENTS in batches and file every event in the event log, once."""
    from hub.recorder import run_recorder_service

    settings = settings_or_exit()
    raise typer.Exit(asyncio.run(run_recorder_service(settings)))


@app.command("ingest")
def ingest() -> None:
    """Turn each configured PBX's websocket and REST state into typed events (one active adapter per PBX)."""
    from hub.ingest.service import run_ingest_service

    settings = settings_or_exit()
    try:
        code = asyncio.run(run_ingest_service(settings))
    except ValueError as exc:
        fail(str(exc))
    raise typer.Exit(code)


@app.command("worker")
def worker(pbx: Annotated[str | None, typer.Option(help="PBX id (default: the first configured)")] = None) -> None:
    """Execute commands on the PBX with idempotency, deadlines and rate limits; answer queries."""
    from hub.loop import run
    from hub.worker.run import run_worker_service

    raise typer.Exit(run(run_worker_service(settings_or_exit(), pbx)))


@app.command("coordinator")
def coordinator(
    rules: Annotated[
        Path | None, typer.Option(help="Assignment rules, YAML or TOML (else ML_COORDINATOR__RULES_FILE)")
    ] = None,
) -> None:
    """Agent registry, call ownership and assignment: leases expire to the safe route, assignments escalate."""
    from hub.coordinator.run import load_assignment_rules, run_coordinator_service
    from hub.rules import RuleError

    settings = settings_or_exit()
    try:
        assignment_rules = load_assignment_rules(settings, rules)
    except RuleError as exc:
        fail(f"bad assignment rules: {exc}")
    if settings.coordinator.safe_route is None and not settings.coordinator.safe_routes:
        typer.echo(
            "warning: no safe route (ML_COORDINATOR__SAFE_ROUTE): calls of dead agents stay where they are", err=True
        )
    raise typer.Exit(asyncio.run(run_coordinator_service(settings, assignment_rules)))


@agent_app.command("run")
def agent_run(
    name: Annotated[str, typer.Argument(help="Agent name (built-in or from an installed package)")],
    backfill: Annotated[
        bool, typer.Option("--backfill", help="Also handle replayed events (Ml-Replay), e.g. to rebuild records")
    ] = False,
    rules: Annotated[Path | None, typer.Option(help="Rule file, YAML or TOML, for agents that take one")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Decide and log, act on nothing (agents that support it)")
    ] = False,
) -> None:
    """Run one replica of an agent; start more to split the calls between them."""
    from hub.sdk.discovery import AgentLoadError, AgentNotFoundError, AgentOptions, AgentOptionsError, load_agent
    from hub.sdk.run import run_agent_service

    settings = settings_or_exit()
    options = AgentOptions(settings=settings, rules=rules, dry_run=dry_run, backfill=backfill)
    try:
        agent = load_agent(name, options)
    except (AgentNotFoundError, AgentLoadError, AgentOptionsError) as exc:
        fail(str(exc))
    raise typer.Exit(asyncio.run(run_agent_service(settings, agent, backfill=backfill)))


@agent_app.command("list")
def agent_list() -> None:
    """List the agents `agent run` can start: built-in ones and those of installed packages."""
    from hub.sdk.discovery import ENTRY_POINT_GROUP, available

    for source in available():
        typer.echo(f"{source.name:20} {source.origin:24} {source.target}")
    typer.echo(f"(third-party agents: installed packages with entry points in {ENTRY_POINT_GROUP!r})", err=True)


@app.command("sim")
def sim(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one)")] = 5001,
    config: Annotated[Path | None, typer.Option(help="YAML or JSON simulator config (SimConfig fields)")] = None,
    finalstatus: Annotated[str | None, typer.Option(help="string or number")] = None,
    sequence: Annotated[str | None, typer.Option(help="per_connection, global or gaps")] = None,
    repeat_upserts: Annotated[float | None, typer.Option(help="Re-send upserts every N seconds (3CX: ~0.75)")] = None,
    scenario: Annotated[Path | None, typer.Option(help="YAML scenario to play (calls, speech, faults, load)")] = None,
    speed: Annotated[float | None, typer.Option(help="Simulated time runs this many times real time")] = None,
    wait_for_client: Annotated[bool, typer.Option(help="Start the scenario when a websocket client connects")] = True,
    exit_after: Annotated[bool, typer.Option(help="Exit when the scenario has run")] = False,
) -> None:
    """Run the built-in 3CX V20 simulator (Call Control REST, websocket and audio, XAPI), optionally a scenario."""
    from pydantic import ValidationError

    from hub.simulator.cli import load_config, serve
    from hub.simulator.scenario import ScenarioError, load_scenario

    try:
        played = load_scenario(scenario) if scenario is not None else None
    except ScenarioError as exc:
        fail(f"bad scenario: {exc}")
    try:
        sim_config = load_config(config, played, finalstatus=finalstatus, sequence=sequence,
                                 repeat_upserts_s=repeat_upserts, clock_speed=speed)  # fmt: skip
    except (OSError, ValueError, ValidationError) as exc:
        fail(f"bad simulator configuration: {exc}")
    raise typer.Exit(asyncio.run(serve(sim_config, host, port, scenario=played, wait_for_client=wait_for_client,
                                       exit_after=exit_after)))  # fmt: skip


@mcp_app.command("serve")
def mcp_serve(
    transport: Annotated[str, typer.Option(help="stdio (for a local assistant) or http")] = "stdio",
    host: Annotated[str | None, typer.Option(help="HTTP interface (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default 8765)")] = None,
    profile: Annotated[str, typer.Option(help="full, or read-only (only the get_* tools)")] = "full",
    pbx: Annotated[str | None, typer.Option(help="PBX id (default: the first configured)")] = None,
    allow_origin: Annotated[list[str] | None, typer.Option(help="Extra allowed Origin for HTTP (repeatable)")] = None,
) -> None:
    """Serve the MCP facade: tools, resources and live updates for assistants."""
    from hub.mcp import serve

    if transport not in ("stdio", "http"):
        fail(f"--transport must be stdio or http, not {transport!r}")
    settings = settings_or_exit()
    raise typer.Exit(
        serve(settings, transport, host, port, profile, pbx_id=pbx, allowed_origins=allow_origin or [])  # type: ignore[arg-type]
    )


@mcp_app.command("config")
def mcp_config(
    client: Annotated[str, typer.Option(help="claude-desktop, claude-code, cursor, gemini, copilot or rovodev")],
    write: Annotated[bool, typer.Option("--write", help="Merge into the client's config file (backup kept)")] = False,
    path: Annotated[Path | None, typer.Option(help="The client's config file, if not the usual place")] = None,
    transport: Annotated[str, typer.Option(help="stdio or http")] = "stdio",
    url: Annotated[str | None, typer.Option(help="With http: the facade's URL")] = None,
    token: Annotated[str | None, typer.Option(help="With http: a bearer token from `mcp token create`")] = None,
    pbx: Annotated[str | None, typer.Option(help="PBX id")] = None,
    profile: Annotated[str, typer.Option(help="full or read-only")] = "full",
) -> None:
    """Print (or --write) an assistant's MCP configuration for this hub."""
    from hub.mcp import CLIENTS, ConfigTarget, config_print, config_write

    if client not in CLIENTS:
        fail(f"unknown client {client!r}; use one of {', '.join(sorted(CLIENTS))}")
    if transport not in ("stdio", "http"):
        fail(f"--transport must be stdio or http, not {transport!r}")
    target = ConfigTarget(transport=transport, pbx_id=pbx, profile=profile, url=url, token=token)  # type: ignore[arg-type]
    raise typer.Exit(config_write(client, target, path=path) if write else config_print(client, target))


@mcp_token_app.command("create")
def mcp_token_create(
    name: Annotated[str, typer.Option(help="A name to recognise the token by")] = "",
    scope: Annotated[list[str] | None, typer.Option(help="read, control or override (repeatable)")] = None,
    dial_quota: Annotated[int | None, typer.Option(help="Calls this token may place per UTC day")] = None,
) -> None:
    """Create an MCP bearer token (shown once; stored hashed)."""
    from hub.mcp import token_create

    raise typer.Exit(
        token_create(settings_or_exit(), name=name, scopes=scope or ["read"], dial_quota_per_day=dial_quota)
    )


@mcp_token_app.command("list")
def mcp_token_list(json_out: Annotated[bool, typer.Option("--json", help="JSON output")] = False) -> None:
    """List MCP bearer tokens (never their secrets)."""
    from hub.mcp import token_list

    raise typer.Exit(token_list(settings_or_exit(), as_json=json_out))


@mcp_token_app.command("revoke")
def mcp_token_revoke(token_id: Annotated[str, typer.Argument(help="Token id or name")]) -> None:
    """Revoke an MCP bearer token; running servers refuse it on their next request."""
    from hub.mcp import token_revoke

    raise typer.Exit(token_revoke(settings_or_exit(), token_id))


@config_app.command("check")
def config_check() -> None:
    """Validate the configuration and explain each problem with what to do (bus, event log, each PBX)."""
    from hub.configcheck import run_checks

    findings = asyncio.run(run_checks(settings_or_exit()))
    for finding in findings:
        typer.echo(finding.line())
    raise typer.Exit(0 if all(f.ok for f in findings) else 1)


def main() -> NoReturn:
    app()
    raise SystemExit(0)


if __name__ == "__main__":
    main()
