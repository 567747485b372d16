"""Running a scenario against a simulator, step by step on the simulator clock.

Each step waits until its time (``at``/``after``) on the one clock, then acts through the same driving API tests
use, and is journalled (``scenario``: step index, action, line, planned offset). Steps run strictly in order, so an
accelerated clock changes how long a scenario takes, never what happens or in which order. A step the PBX refuses
(answering a leg that is not ringing, say) stops the run with the step's line.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hub.simulator.engine import Leg, SimError
from hub.simulator.load import LoadStats, run_load
from hub.simulator.odata import ODataError
from hub.simulator.scenario import Scenario, ScenarioError, Step
from hub.simulator.sound import tone

if TYPE_CHECKING:
    from hub.simulator.app import Simulator


@dataclass
class ScenarioRun:
    scenario: Scenario
    started_at: float = 0.0
    finished_at: float = 0.0
    steps_run: int = 0
    calls: dict[str, int] = field(default_factory=dict)  # name -> 3CX callid
    load: list[LoadStats] = field(default_factory=list)


class _Runner:
    def __init__(self, sim: Simulator, scenario: Scenario) -> None:
        self.sim = sim
        self.engine = sim.engine
        self.scenario = scenario
        self.run = ScenarioRun(scenario)
        self.background: list[asyncio.Task[LoadStats]] = []

    def fail(self, step: Step, problem: str) -> ScenarioError:
        return ScenarioError(self.scenario.source, step.line, f"{step.action}: {problem}")

    def callid(self, step: Step) -> int:
        callid = self.run.calls[step.args["call"]]
        if callid not in self.engine.calls:
            raise self.fail(step, f"call {step.args['call']!r} has ended")
        return callid

    def leg(self, step: Step, statuses: set[str], *, prefer_route_point: bool = False) -> Leg:
        legs = [leg for leg in self.engine.legs_of(self.callid(step)) if leg.status in statuses]
        if "dn" in step.args:
            legs = [leg for leg in legs if leg.dn == step.args["dn"]]
        elif prefer_route_point:
            on_rp = [leg for leg in legs if leg.dn == self.sim.config.client_id]
            legs = on_rp or legs
        if len(legs) != 1:
            what = "/".join(sorted(statuses))
            found = ", ".join(f"{leg.dn} ({leg.status})" for leg in self.engine.legs_of(self.callid(step))) or "none"
            hint = "" if not legs else "; say which with dn:"
            raise self.fail(step, f"needs one {what} leg of call {step.args['call']!r}, found: {found}{hint}")
        return legs[0]

    async def execute(self, step: Step) -> None:
        a, engine = step.args, self.engine
        if step.action == "call":
            call = engine.place_call(a["from"], a["to"], caller_name=a.get("caller_name", ""), did=a.get("did", ""))
            if "as" in a:
                self.run.calls[a["as"]] = call.callid
        elif step.action == "answer":
            engine.answer(self.leg(step, {"Ringing"}).id)
        elif step.action == "answer_remote":
            engine.answer_remote(self.callid(step))
        elif step.action == "dtmf":
            engine.send_dtmf(self.callid(step), a["digits"])
        elif step.action == "transfer":
            engine.transfer(self.leg(step, {"Connected"}, prefer_route_point=True).id, a["to"])
        elif step.action == "divert":
            engine.divert(self.leg(step, {"Ringing"}).id, a["to"], a.get("reason", "None"))
        elif step.action == "route_to":
            engine.route_to(self.leg(step, {"Ringing", "Connected"}, prefer_route_point=True).id, a["to"])
        elif step.action == "park":
            engine.park(self.leg(step, {"Connected"}, prefer_route_point=True).id, a.get("orbit"))
        elif step.action == "pickup":
            parked = next((c for c in engine.calls.values() if c.parked_at == a["orbit"]), None)
            if parked is None:
                raise self.fail(step, f"nothing is parked at {a['orbit']}")
            engine.place_call(a["by"], f"{self.sim.config.pickup_code}{a['orbit']}")
            if "as" in a:
                self.run.calls[a["as"]] = parked.callid
        elif step.action == "hangup":
            engine.hangup(self.callid(step))
        elif step.action == "say":
            await self.say(step)
        elif step.action == "presence":
            self.sim.directory.set_presence(a["number"], profile=a.get("profile"), queue_status=a.get("queue_status"),
                                            registered=a.get("registered"))  # fmt: skip
        elif step.action == "chat":
            self.sim.directory.add_chat_message(a["from"], a["message"], from_name=a.get("from_name", ""),
                                                queue_number=a.get("queue_number", ""),
                                                provider_type=a.get("provider_type", "SMS"))  # fmt: skip
        elif step.action == "fault":
            params = {k: v for k, v in a.items() if k != "kind"}
            self.sim.faults.inject(a["kind"], **params)
        elif step.action == "load":
            stats = LoadStats()
            self.run.load.append(stats)
            self.background.append(asyncio.create_task(run_load(
                self.sim, calls=a["calls"], rate=a["rate"], hold=a["hold"], duration=a.get("duration"),
                to=a.get("to"), stats=stats)))  # fmt: skip

    async def say(self, step: Step) -> None:
        a = step.args
        leg = self.leg(step, {"Connected"}, prefer_route_point=True)
        if "tone" in a:
            await self.sim.say(leg.id, pcm=tone(a["tone"]["hz"], a["tone"]["ms"]), label=a.get("label", "tone"))
        elif "wav" in a:
            await self.sim.say(leg.id, wav=self.scenario.base_dir / a["wav"], label=a.get("label", ""))
        else:
            await self.sim.say(leg.id, text=a["text"], label=a.get("label", ""))

    async def __call__(self) -> ScenarioRun:
        clock = self.sim.clock
        self.run.started_at = clock()
        try:
            for index, step in enumerate(self.scenario.steps):
                await clock.sleep_until(self.run.started_at + step.at)
                self.engine.journal.add(clock(), "scenario", detail={"step": index, "action": step.action,
                                        "line": step.line, "planned_s": step.at})  # fmt: skip
                try:
                    await self.execute(step)
                except (SimError, ODataError) as exc:
                    raise self.fail(step, exc.reason if isinstance(exc, SimError) else exc.message) from None
                except ValueError as exc:
                    if isinstance(exc, ScenarioError):
                        raise
                    raise self.fail(step, str(exc)) from None
                self.run.steps_run += 1
            if self.background:
                await asyncio.gather(*self.background)
        finally:
            for task in self.background:
                task.cancel()
        self.run.finished_at = clock()
        return self.run


async def run_scenario(sim: Simulator, scenario: Scenario) -> ScenarioRun:
    """Run every step of ``scenario`` on ``sim`` (use ``SimHandle.run_scenario`` from tests)."""
    return await _Runner(sim, scenario)()


def describe(run: ScenarioRun) -> dict[str, Any]:
    """A summary for the CLI."""
    return {"scenario": run.scenario.name, "steps": run.steps_run, "simulated_s": round(run.finished_at
            - run.started_at, 3), "calls": run.calls, "load": [vars(s) for s in run.load]}  # fmt: skip
