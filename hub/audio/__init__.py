"""The one audio module (shared by the recorder, the routing agent's prompts and the voice agent).

3CX streams a participant's audio as raw s16le PCM, 8 kHz mono (16 bytes per ms) over a long-lived GET, and takes
audio to play by a chunked POST paced in real time (at most ~500 ms ahead). This package reads a stream once and fans
it out to several consumers, writes 20 ms frames on a real-time clock with ``clear`` (barge-in) and ``cancel``, and
(:class:`ParticipantStream`) carries both directions of one participant's stream over HTTP.
"""

from hub.audio.fanout import AudioFanout, AudioSubscription
from hub.audio.format import BYTES_PER_MS, FRAME_BYTES, FRAME_MS, SAMPLE_RATE, silence
from hub.audio.participant import StreamError
from hub.audio.stream import ParticipantStream
from hub.audio.writer import PacedWriter
from hub.pbx.token import TokenSource

__all__ = [
    "BYTES_PER_MS",
    "FRAME_BYTES",
    "FRAME_MS",
    "SAMPLE_RATE",
    "AudioFanout",
    "AudioSubscription",
    "PacedWriter",
    "ParticipantStream",
    "StreamError",
    "TokenSource",
    "silence",
]
