"""Participant audio (reference §4) with plain httpx clients: GET pacing and content, the 404/424 rule, the stream
scope, POST into the playout buffer, and D§11's underrun and reply-utterance definitions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.requests import Request
from starlette.responses import StreamingResponse

from hub.simulator import SimConfig, SimHandle
from hub.simulator.media import Playout
from hub.simulator.sound import peak, read_wav, silence, tone, tone_synthesizer, write_wav
from tests.helpers import wait_until

pytestmark = pytest.mark.anyio

BYTES_PER_S = 16000


def stream_url(sim: SimHandle, dn: str, pid: int) -> str:
    return f"/callcontrol/{dn}/participants/{pid}/stream"


async def connected_route_point_leg(sim: SimHandle) -> int:
    call = sim.engine.place_call("+15550100", "800", caller_name="Caller")
    return sim.route_point_leg(call.callid).id


# --------------------------------------------------------------------------- GET: what the remote party says


async def test_get_streams_the_callers_speech_paced_in_real_time(sim: SimHandle, api: httpx.AsyncClient) -> None:
    pid = await connected_route_point_leg(sim)
    speech = tone(440, 300)
    received = bytearray()
    started = time.monotonic()  # before the stream starts, so elapsed time is never underestimated
    async with api.stream("GET", stream_url(sim, "800", pid)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        utterance = sim.media.say(pid, speech, label="hello")
        with anyio.fail_after(5):
            async for chunk in response.aiter_raw():
                received += chunk
                # never faster than real time: a chunk is sent once it has been spoken
                assert len(received) / BYTES_PER_S <= time.monotonic() - started + 0.001
                if len(received) >= BYTES_PER_S:  # one second of audio
                    break
    assert time.monotonic() - started >= 0.95
    assert speech in received  # the utterance arrives intact, sample for sample
    before = received[: received.index(speech)]
    after = received[received.index(speech) + len(speech) :]
    assert peak(before) == 0 and peak(after) == 0  # silence when nobody speaks
    [entry] = [e for e in sim.journal.of("media") if e.detail["action"] == "utterance"]
    assert entry.detail["start"] == utterance.start
    assert entry.detail["end"] == pytest.approx(utterance.start + 0.3)
    assert entry.detail["label"] == "hello"


@pytest.mark.parametrize("sim_config", [SimConfig(stream_chunk_bytes=333)], ids=["odd_chunks"])
async def test_odd_sized_chunks_carry_the_same_audio(
    sim: SimHandle, api: httpx.AsyncClient, sim_config: SimConfig
) -> None:
    pid = await connected_route_point_leg(sim)
    speech = tone(600, 200)
    received = bytearray()
    async with api.stream("GET", stream_url(sim, "800", pid)) as response:
        sim.media.say(pid, speech)
        with anyio.fail_after(5):
            async for chunk in response.aiter_raw():
                received += chunk
                if speech in received:
                    break
    assert speech in received


async def test_a_sender_that_goes_away_mid_body_is_journalled_not_an_error(
    sim: SimHandle, api: httpx.AsyncClient
) -> None:
    """An agent killed while it plays a prompt: the simulator notes it and carries on (no traceback per stream)."""
    pid = await connected_route_point_leg(sim)
    token = api.headers["Authorization"]
    host, port = sim.base_url.removeprefix("http://").rsplit(":", 1)
    _, writer = await asyncio.open_connection(host, int(port))
    chunk = tone(440, 20)
    writer.write(
        f"POST {stream_url(sim, '800', pid)} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\n"
        f"Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + f"{len(chunk):x}\r\n".encode()
        + chunk
        + b"\r\n"
    )
    await writer.drain()
    await wait_until(lambda: _media(sim, "stream_opened"), what="the stream to open")
    writer.close()  # gone without the last chunk
    await wait_until(lambda: _media(sim, "stream_closed"), what="the stream to close")
    [closed] = [e for e in sim.journal.of("media") if e.detail["action"] == "stream_closed"]
    assert closed.detail["reason"] == "sender_gone" and closed.detail["bytes"] == len(chunk)
    assert (await api.get("/callcontrol/800")).status_code < 500  # the simulator carries on


async def _media(sim: SimHandle, action: str) -> bool:
    return any(e.detail["action"] == action for e in sim.journal.of("media"))


@pytest.mark.parametrize(
    "sim_config",
    [
        SimConfig(route_point_inbound_connected=False, stream_before_connected=424),
        SimConfig(route_point_inbound_connected=False, stream_before_connected=404),
    ],
    ids=["424", "404"],
)
async def test_stream_before_the_leg_is_connected_is_404_or_424(
    sim: SimHandle, api: httpx.AsyncClient, sim_config: SimConfig
) -> None:
    call = sim.engine.place_call("+15550100", "800")
    pid = sim.route_point_leg(call.callid).id
    assert (await api.get(stream_url(sim, "800", pid))).status_code == sim_config.stream_before_connected
    post = await api.post(stream_url(sim, "800", pid), content=b"\x00\x00")
    assert post.status_code == sim_config.stream_before_connected
    sim.engine.answer(pid)
    async with api.stream("GET", stream_url(sim, "800", pid)) as response:
        assert response.status_code == 200


@pytest.mark.parametrize(
    "sim_config", [SimConfig(stream_scope="route_point"), SimConfig(stream_scope="monitored")], ids=["rp", "any"]
)
async def test_only_legs_the_app_controls_may_stream(
    sim: SimHandle, api: httpx.AsyncClient, sim_config: SimConfig
) -> None:
    call = sim.engine.place_call("+15550100", "101")
    [leg] = sim.engine.legs_of(call.callid)
    sim.engine.answer(leg.id)
    if sim_config.stream_scope == "route_point":
        r = await api.get(stream_url(sim, "101", leg.id))
        assert r.status_code == 403
        assert "not controlled" in r.json()["reasontext"]
    else:
        async with api.stream("GET", stream_url(sim, "101", leg.id)) as response:
            assert response.status_code == 200


async def test_stream_needs_a_token_and_a_known_participant(sim: SimHandle, api: httpx.AsyncClient) -> None:
    pid = await connected_route_point_leg(sim)
    async with httpx.AsyncClient(base_url=sim.base_url) as anonymous:
        assert (await anonymous.get(stream_url(sim, "800", pid))).status_code == 401
    assert (await api.get(stream_url(sim, "800", 999))).status_code == 404


async def test_the_get_stream_ends_when_the_leg_goes_away(sim: SimHandle, api: httpx.AsyncClient) -> None:
    call = sim.engine.place_call("+15550100", "800")
    pid = sim.route_point_leg(call.callid).id
    total = 0
    async with api.stream("GET", stream_url(sim, "800", pid)) as response:
        with anyio.fail_after(5):
            async for chunk in response.aiter_raw():
                total += len(chunk)
                if total >= 3200:  # 100 ms in, the caller hangs up
                    sim.engine.hangup(call.callid)
    closed = [e for e in sim.journal.of("media") if e.detail["action"] == "stream_closed"]
    assert [e.detail["reason"] for e in closed] == ["leg_ended"]


async def test_a_leg_that_ends_as_its_get_stream_starts_ends_the_body_not_in_a_traceback(
    sim: SimHandle, api: httpx.AsyncClient
) -> None:
    """The soak's simulator printed an ASGI traceback (404 raised mid-response) whenever a caller hung up between
    the stream's checks and its first chunk: the stream now holds the leg's media from the checks on."""
    call = sim.engine.place_call("+15550100", "800")
    pid = sim.route_point_leg(call.callid).id
    scope = {"type": "http", "method": "GET", "path": stream_url(sim, "800", pid), "query_string": b"",
             "headers": [(b"authorization", api.headers["Authorization"].encode())],
             "path_params": {"dn": "800", "pid": pid}}  # fmt: skip
    response = await sim.sim.streams.get(Request(scope))
    assert response.status_code == 200 and isinstance(response, StreamingResponse)
    sim.engine.hangup(call.callid)  # after the checks, before the first chunk
    with anyio.fail_after(5):
        body = [chunk async for chunk in response.body_iterator]
    assert body == []
    closed = [e for e in sim.journal.of("media") if e.detail["action"] == "stream_closed"]
    assert [e.detail["reason"] for e in closed] == ["leg_ended"]


# --------------------------------------------------------------------------- caller speech sources


async def test_utterances_queue_back_to_back_and_are_cut_at_hang_up(sim: SimHandle) -> None:
    call = sim.engine.place_call("+15550100", "800")
    pid = sim.route_point_leg(call.callid).id
    first = sim.media.say(pid, tone(300, 200))
    second = sim.media.say(pid, tone(500, 5000))
    assert second.start == pytest.approx(first.end)
    assert second.ms == pytest.approx(5000, abs=0.01)
    await wait_until(lambda: _after(sim, first.end), timeout=3, what="the first utterance to end")
    sim.engine.hangup(call.callid)
    [cut] = [e for e in sim.journal.of("media") if e.detail["action"] == "utterance_cut"]
    assert cut.detail["utterance"] == second.id
    assert cut.detail["end"] < second.end


async def test_speech_from_text_through_the_pluggable_synthesizer(sim: SimHandle) -> None:
    pid = await connected_route_point_leg(sim)
    default = await sim.say(pid, "I would like to pay my bill")
    assert default.ms == pytest.approx(len(tone_synthesizer("I would like to pay my bill")) / 16, abs=0.01)
    assert default.label == "I would like to pay my bill"
    seen: list[str] = []

    async def synthesizer(text: str) -> bytes:
        seen.append(text)
        return tone(200, 120)

    sim.set_synthesizer(synthesizer)
    plugged = await sim.say(pid, "yes")
    assert seen == ["yes"]
    assert plugged.ms == pytest.approx(120, abs=0.01)
    assert plugged.start == pytest.approx(default.end, abs=1e-3)


async def test_speech_from_a_wav_file_is_converted_to_8khz_mono(sim: SimHandle, tmp_path: Path) -> None:
    import wave

    path = tmp_path / "hello.wav"
    mono = tone(400, 500)
    stereo_16k = b"".join(mono[i : i + 2] * 2 for i in range(0, 8000, 2))  # 250 ms of samples, each twice
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(stereo_16k * 2)  # 500 ms at 16 kHz
    assert len(read_wav(path)) == 8000  # 500 ms at 8 kHz mono
    write_wav(tmp_path / "mono.wav", tone(400, 100))
    assert read_wav(tmp_path / "mono.wav") == tone(400, 100)
    pid = await connected_route_point_leg(sim)
    utterance = await sim.say(pid, wav=path)
    assert utterance.ms == pytest.approx(500, abs=0.01)
    assert utterance.label == "hello.wav"


async def test_say_needs_a_connected_leg(sim: SimHandle) -> None:
    from hub.simulator import SimError

    call = sim.engine.place_call("+15550100", "101")  # ringing
    [leg] = sim.engine.legs_of(call.callid)
    with pytest.raises(SimError, match="Ringing"):
        sim.media.say(leg.id, tone(300, 100))


# --------------------------------------------------------------------------- POST: what the app plays


async def _body(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_a_posted_tone_comes_back_out_of_the_playout_buffer(sim: SimHandle, api: httpx.AsyncClient) -> None:
    pid = await connected_route_point_leg(sim)
    reply = tone(440, 400)
    frames = [reply[i : i + 333] for i in range(0, len(reply), 333)]  # odd-sized chunks are re-framed
    r = await api.post(stream_url(sim, "800", pid), content=_body(*frames),
                       headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    assert r.status_code == 200
    playout = sim.playout(pid)
    assert bytes(playout.pcm) == reply
    assert playout.underruns == []
    [started] = playout.replies
    [entry] = [e for e in sim.journal.of("media") if e.detail["action"] == "reply_started"]
    assert entry.detail["played_at"] == started.first_loud_played_at
    assert started.first_loud_played_at >= started.first_loud_received_at
    assert playout.buffered_ms(sim.clock()) <= 400  # sent ahead: it is still playing out in real time
    await wait_until(lambda: _drained(sim, playout), timeout=3, what="the reply to play out")
    assert playout.played_ms(sim.clock()) == pytest.approx(400)


async def _drained(sim: SimHandle, playout: Playout) -> bool:
    return playout.buffered_ms(sim.clock()) == 0


async def test_a_reply_that_starves_mid_utterance_is_an_underrun(sim: SimHandle, api: httpx.AsyncClient) -> None:
    pid = await connected_route_point_leg(sim)
    playout = sim.media.playout(pid)

    async def starving() -> AsyncIterator[bytes]:
        yield tone(440, 100)
        await wait_until(lambda: _starved_for(sim, playout, 0.1), timeout=3, what="the buffer to run dry")
        yield tone(440, 100)

    r = await api.post(stream_url(sim, "800", pid), content=starving())
    assert r.status_code == 200
    [underrun] = playout.underruns
    assert underrun.ms >= 100
    assert len(playout.replies) == 1 and playout.replies[0].underruns == 1
    assert [e.detail["action"] for e in sim.journal.of("media")].count("underrun") == 1


async def _starved_for(sim: SimHandle, playout: Playout, seconds: float) -> bool:
    return playout.play_end is not None and sim.clock() > playout.play_end + seconds


async def test_a_post_stream_is_cut_off_when_the_leg_goes_away(sim: SimHandle, api: httpx.AsyncClient) -> None:
    call = sim.engine.place_call("+15550100", "800")
    pid = sim.route_point_leg(call.callid).id

    async def endless() -> AsyncIterator[bytes]:  # a sender that never stops by itself
        sent = 0
        while True:
            yield tone(440, 20)
            sent += 1
            if sent == 5:
                sim.engine.hangup(call.callid)

    with anyio.fail_after(5):
        try:
            r = await api.post(stream_url(sim, "800", pid), content=endless())
            assert r.status_code == 200  # answered before the connection closed
        except httpx.TransportError:
            pass  # or the connection closed under the sender: either way it stops
    [closed] = [e for e in sim.journal.of("media") if e.detail["action"] == "stream_closed"]
    assert closed.detail["reason"] == "leg_ended"
    played = len(sim.media.legs[pid].playout.pcm)
    assert 0 < played <= 5 * 320  # nothing sent after the hang-up is played


@pytest.mark.parametrize(
    "sim_config", [SimConfig(post_audio_needs_chunked=True), SimConfig(post_audio_needs_chunked=False)],
    ids=["discarded", "played"],
)  # fmt: skip
async def test_posted_audio_that_is_not_chunked(sim: SimHandle, api: httpx.AsyncClient, sim_config: SimConfig) -> None:
    pid = await connected_route_point_leg(sim)
    r = await api.post(stream_url(sim, "800", pid), content=tone(440, 100))  # Content-Length, not chunked
    assert r.status_code == 200  # 3CX answers and silently drops it
    played = bytes(sim.playout(pid).pcm)
    assert played == (b"" if sim_config.post_audio_needs_chunked else tone(440, 100))


@pytest.mark.parametrize(
    "sim_config", [SimConfig(playout_max_ahead_ms=200), SimConfig(playout_max_ahead_ms=None)], ids=["200ms", "any"]
)
async def test_audio_sent_too_far_ahead(sim: SimHandle, api: httpx.AsyncClient, sim_config: SimConfig) -> None:
    pid = await connected_route_point_leg(sim)
    second = tone(440, 1000)
    await api.post(stream_url(sim, "800", pid), content=_body(*(second[i : i + 1600] for i in range(0, 16000, 1600))))
    playout = sim.playout(pid)
    if sim_config.playout_max_ahead_ms is None:
        assert playout.dropped_bytes == 0 and len(playout.pcm) == 16000
    else:
        assert playout.dropped_bytes > 0
        assert len(playout.pcm) + playout.dropped_bytes == 16000
        assert len(playout.pcm) / 16 <= 200 + 100 + 50  # the limit, one chunk, scheduling slack


async def test_the_journal_gives_the_voice_turn_latency(sim: SimHandle, api: httpx.AsyncClient) -> None:
    """D§11: from the ground-truth end of the caller's speech to the first loud reply frame the simulator receives."""
    pid = await connected_route_point_leg(sim)
    said = sim.media.say(pid, tone(300, 100))
    await wait_until(lambda: _after(sim, said.end), timeout=3, what="the caller to finish")
    await api.post(stream_url(sim, "800", pid), content=_body(silence(60), tone(500, 100)))
    media = {e.detail["action"]: e.detail for e in sim.journal.of("media")}
    latency = media["reply_started"]["received_at"] - media["utterance"]["end"]
    assert 0 < latency < 2
    queued_behind_silence = media["reply_started"]["played_at"] - media["reply_started"]["received_at"]
    assert queued_behind_silence == pytest.approx(0.06, abs=0.03)


async def _after(sim: SimHandle, at: float) -> bool:
    return sim.clock() >= at


# --------------------------------------------------------------------------- the playout model (sans-IO, exact times)


def _playout(**options: float) -> tuple[Playout, list[tuple[str, dict[str, object]]]]:
    seen: list[tuple[str, dict[str, object]]] = []
    config = SimConfig.model_validate(options)
    return Playout(config, lambda action, **d: seen.append((action, d))), seen


def test_starving_inside_a_reply_is_an_underrun_but_pauses_between_replies_are_not() -> None:
    playout, seen = _playout()
    playout.feed(tone(440, 200), 0.0, 1)  # plays 0.0-0.2
    playout.feed(tone(440, 200), 0.3, 1)  # empty 0.2-0.3 (100 ms) inside the reply: an underrun
    playout.feed(tone(440, 200), 0.52, 1)  # empty 0.5-0.52 (20 ms): under the 40 ms threshold
    playout.feed(tone(440, 200), 2.5, 1)  # 1.78 s of nothing: a new reply, not an underrun
    assert [(round(u.start, 3), round(u.end, 3)) for u in playout.underruns] == [(0.2, 0.3)]
    assert len(playout.replies) == 2
    assert [r.underruns for r in playout.replies] == [1, 0]
    assert [a for a, _ in seen] == ["reply_started", "underrun", "reply_started"]


def test_sending_ahead_never_underruns_and_silence_frames_keep_the_buffer_fed() -> None:
    playout, _ = _playout()
    playout.feed(tone(440, 1000), 0.0, 1)
    playout.feed(silence(500), 0.5, 1)  # arrives early: queued behind the tone
    playout.feed(tone(440, 100), 1.2, 1)  # plays at 1.5 s, after the queued silence
    assert playout.underruns == []
    assert len(playout.replies) == 1
    assert playout.buffered_ms(1.2) == pytest.approx(400)


def test_the_first_loud_sample_is_timed_to_the_sample() -> None:
    playout, _ = _playout()
    playout.feed(silence(30) + tone(440, 100), 10.0, 1)
    [reply] = playout.replies
    assert reply.first_loud_received_at == 10.0
    assert reply.first_loud_played_at == pytest.approx(10.030, abs=0.0002)


def test_odd_bytes_carry_over_between_chunks() -> None:
    playout, _ = _playout()
    audio = tone(440, 50)
    playout.feed(audio[:101], 0.0, 1)
    playout.feed(audio[101:], 0.001, 1)
    assert bytes(playout.pcm) == audio
