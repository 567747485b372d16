"""The template agent: the whole agent SDK on one page (docs/agents.md walks through this file).

``masterlinc agent run template`` starts it. It takes the calls the coordinator assigns to it (the SDK claims
them), notes each call in its own table (written together with its position, so a redelivered event changes
nothing), hangs up on ``#``, hands the caller to the operator with what it knows on ``0``, and notes how each call
ended. Start two and they split the calls; kill one and its calls go to the safe route.
"""

from __future__ import annotations

import sqlalchemy as sa

from hub.sdk import Agent, AgentAssigned, AgentHandedOff, CallEnded, Context, Drop, DtmfReceived

OPERATOR = "100"

db = sa.MetaData()
calls = sa.Table(
    "template_calls",
    db,
    sa.Column("call_id", sa.String(64), primary_key=True),
    sa.Column("pbx_id", sa.String(64), nullable=False),
    sa.Column("how", sa.String(32), nullable=False),  # assigned | handed_off
    sa.Column("outcome", sa.String(64)),
)

agent = Agent("template", capabilities=["notes", "handoff"], version="1.0", database=db)


@agent.on_assigned
async def assigned(event: AgentAssigned, ctx: Context) -> None:
    """The coordinator chose us and the SDK claimed the call: we own it until it ends or we let go."""
    async with ctx.transaction() as conn:
        await conn.execute(calls.insert().values(call_id=ctx.call_id, pbx_id=ctx.pbx_id, how="assigned"))


@agent.on_handoff
async def handed_to_us(event: AgentHandedOff, ctx: Context) -> None:
    """Another agent handed us the call with what it knew (event.data.summary, event.data.context)."""
    async with ctx.transaction() as conn:
        await conn.execute(calls.insert().values(call_id=ctx.call_id, pbx_id=ctx.pbx_id, how="handed_off"))


@agent.on(DtmfReceived, owned=True)
async def keys(event: DtmfReceived, ctx: Context) -> None:
    if "#" in event.data.digits:
        await ctx.send(Drop)  # its id derives from this event: a redelivery is answered, not repeated
    elif "0" in event.data.digits:
        await ctx.handoff(
            to_extension=OPERATOR, summary="the caller asked for a person", context={"digits": event.data.digits}
        )


@agent.on(CallEnded, owned=True)
async def ended(event: CallEnded, ctx: Context) -> None:
    """Runs before the SDK releases the lease of the ended call."""
    async with ctx.transaction() as conn:
        await conn.execute(calls.update().where(calls.c.call_id == ctx.call_id).values(outcome=event.data.cause))
