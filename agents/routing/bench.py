"""``routing.decision``: a routing decision from event in to command out, next to a raw NATS hop in the same run.

The routing agent runs in its own process (``masterlinc agent run routing --rules FILE``, 16 partitions). Each call's
``call.created`` and ``call.answered`` go out first (untimed: the agent learns the caller and that the route-point leg
is Connected); then, at a steady rate, the coordinator's ``agent.assigned``, timed from its publish to the moment
the agent's ``transfer`` command reaches a subscriber of ``ml.cmd.>`` in this process. In between: the feed
(the server's partitioned copy of ML_EVENTS), the SDK's claim (a KV create and ``agent.claimed``), the rule match,
``routing.decided`` and the command's JetStream publish. A stand-in worker answers each command at once, so the
handler is never held up by a PBX. The baselines: a raw core NATS hop and a raw JetStream publish -> pull consumer
hop, measured first in the same run.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from hub.bench.bus_bench import bench_nats, bus_latencies, latency_vs_raw, paced, raw_latencies
from hub.bench.procs import spawn
from hub.bench.registry import BenchOptions, BenchResult, benchmark, percentile
from hub.bus import EventPublisher, connect
from hub.bus.kv import AGENTS, open_bucket
from hub.coordinator.bench import _fresh
from hub.sdk.client import REPLY_HEADER
from hub.sdk.feed import consumer_name
from schemas import events as ev
from schemas import subjects
from schemas.commands import CommandResult
from schemas.common import Direction, LegRef, Participant, utcnow
from schemas.identity import leg_event_id, new_call_id

PBX = "bench"
PARTITIONS = 16
RULES = """\
lists: {vip: ["+1555*"]}
rules:
  - {name: vip, match: {caller_list: vip}, action: {transfer: "101"}}
default: {queue: "8000"}
"""


def _call_events(call_id: str, n: int) -> tuple[list[ev.EventBase], ev.AgentAssigned]:
    leg = LegRef(dn="800", participant_id=n % 60000, legid=n % 60000)
    caller = f"+1555{n:07d}"
    participant = Participant(dn="800", participant_id=leg.participant_id, legid=leg.legid, status="Connected",
                              party_caller_id=caller, party_dn_type="Wexternalline")  # fmt: skip
    env = {"pbx_id": PBX, "call_id": call_id, "occurred_at": utcnow()}
    created = ev.CallCreated(
        event_id=leg_event_id(PBX, call_id, "", "created"),
        data=ev.CallCreatedData(direction=Direction.INBOUND, from_number=caller, to_number="800"),
        **env,
    )
    answered = ev.CallAnswered(
        event_id=leg_event_id(PBX, call_id, leg.key, "answered"),
        leg=leg,
        data=ev.LegData(participant=participant),
        **env,
    )
    assigned = ev.AgentAssigned(
        event_id=uuid.uuid4(),
        leg=leg,
        issued_by="agent:coordinator",
        data=ev.AssignedData(agent="routing", rule="bench", claim_within_s=3.0),
        **env,
    )
    return [created, answered], assigned


async def _settled(js: JetStreamContext, partitions: int) -> bool:
    """Every routing consumer has handled everything it was given."""
    for partition in range(partitions):
        try:
            info = await js.consumer_info(subjects.FEED_STREAM, consumer_name("routing", partition))
        except Exception:
            return False
        if info.num_pending or info.num_ack_pending:
            return False
    return True


async def _agent_up(kv: KeyValue) -> bool:
    try:
        keys = await kv.keys()
    except Exception:
        return False
    return any(k.startswith("routing.") for k in keys)


async def _decisions(url: str, rate: float, count: int) -> tuple[list[float], int]:
    await _fresh(url)
    worker_nc = await connect(url, name="bench-routing-worker")
    pub_nc = await connect(url, name="bench-routing-pub")
    js = pub_nc.jetstream()
    sent: dict[str, int] = {}
    latencies: list[float] = []
    kinds: dict[str, int] = {}
    done = asyncio.Event()

    async def command(msg: Msg) -> None:
        arrived = time.perf_counter_ns()
        body = json.loads(msg.data)
        call_id = body.get("call_id")
        if call_id in sent:
            latencies.append((arrived - sent.pop(call_id)) / 1e6)
            kinds[body["type"]] = kinds.get(body["type"], 0) + 1
        reply = (msg.headers or {}).get(REPLY_HEADER)
        if reply:  # the stand-in worker: done at once
            await worker_nc.publish(
                reply, CommandResult(command_id=body["command_id"], ok=True).model_dump_json().encode()
            )
        if len(latencies) >= count:
            done.set()

    await worker_nc.subscribe(f"ml.cmd.{PBX}.>", cb=command)
    await worker_nc.flush()
    with tempfile.TemporaryDirectory(prefix="ml-routing-bench-") as tmp:
        rules = Path(tmp) / "routing.yaml"
        rules.write_text(RULES)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ML_") and k not in ("NATS_URL", "DATABASE_URL")}
        env.update({"NATS_URL": url, "ML_DATA_DIR": tmp, "ML_LOG_LEVEL": "WARNING", "ML_LOG_FORMAT": "json",
                    "ML_AGENTS__PARTITIONS": str(PARTITIONS)})  # fmt: skip
        with spawn(["-m", "hub.cli", "agent", "run", "routing", "--rules", str(rules)], env):
            agents_kv = await open_bucket(js, AGENTS)
            async with asyncio.timeout(60):
                while not await _agent_up(agents_kv):  # noqa: ASYNC110 - another process: poll its registry entry
                    await asyncio.sleep(0.05)
            publisher = EventPublisher(js)
            calls = [_call_events(new_call_id(), i) for i in range(count)]
            await publisher.publish_many(e for before, _ in calls for e in before)  # what the agent knows beforehand
            await publisher.flush()
            async with asyncio.timeout(60):
                while not await _settled(js, PARTITIONS):  # noqa: ASYNC110 - another process: poll its consumers
                    await asyncio.sleep(0.1)
            async for i in paced(rate, count):
                # stamped as it is sent, as the coordinator does: one made up front is past its claim window
                # (3 s) long before the last of 3,000 calls at 100/s goes out, and the agent rightly ignores it
                assigned = calls[i][1].model_copy(update={"occurred_at": utcnow()})
                assert assigned.call_id is not None
                sent[assigned.call_id] = time.perf_counter_ns()
                await publisher.publish(assigned)
            await publisher.flush()
            await asyncio.wait_for(done.wait(), 60)
    for nc in (worker_nc, pub_nc):
        await nc.close()
    return latencies, kinds.get("transfer", 0)


@benchmark("routing.decision", description="agent.assigned -> the routing agent's command out, vs a raw NATS hop")
async def routing_decision(options: BenchOptions) -> BenchResult:
    rate = 100.0
    count = options.scale(3000, 200)
    async with bench_nats(options) as url:
        raw = await raw_latencies(url, rate, count, b"x" * 700)
        jetstream = await bus_latencies(url, rate, count)
        decided, transfers = await _decisions(url, rate, count)
    return latency_vs_raw(
        "routing.decision",
        "decision",
        decided,
        raw,
        jetstream,
        target="decision p99 <= 5 ms",
        met=None if options.quick else (percentile(decided, 99) <= 5.0 and transfers == count),
        notes=f"{count} calls at {rate:.0f}/s, 16 partitions, one replica (its own process, log level WARNING); "
        "agent.assigned "
        "published -> transfer command received on ml.cmd (feed, claim, rules, routing.decided, command publish); "
        f"{transfers} transfers",
    )
