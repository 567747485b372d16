"""The ack subject read without nats-py's metadata object: both subject layouts the server uses."""

from __future__ import annotations

from nats.aio.msg import Msg

from hub.bus.pull import AckInfo, ack_info


def _msg(reply: str) -> Msg:
    return Msg(_client=None, subject="ml.evt.x", reply=reply, data=b"")  # type: ignore[arg-type]


def test_v1_and_v2_ack_subjects_give_deliveries_sequence_and_pending() -> None:
    v1 = "$JS.ACK.ML_EVENTS.ml-recorder.2.1234.99.1700000000000000000.17"
    v2 = "$JS.ACK.hub.ACCHASH.ML_EVENTS.ml-recorder.1.5678.100.1700000000000000000.0.tok"
    assert ack_info(_msg(v1)) == AckInfo(delivered=2, stream_seq=1234, pending=17)
    assert ack_info(_msg(v2)) == AckInfo(delivered=1, stream_seq=5678, pending=0)
