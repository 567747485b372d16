"""The 3CX stream format: raw signed 16-bit little-endian PCM, 8000 Hz, mono."""

from __future__ import annotations

SAMPLE_RATE = 8000
SAMPLE_BYTES = 2
BYTES_PER_MS = SAMPLE_RATE * SAMPLE_BYTES // 1000  # 16
FRAME_MS = 20
FRAME_BYTES = FRAME_MS * BYTES_PER_MS  # 320


def silence(ms: int) -> bytes:
    return b"\x00" * (ms * BYTES_PER_MS)


def duration_ms(data: bytes | bytearray) -> float:
    return len(data) / BYTES_PER_MS
