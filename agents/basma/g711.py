"""G.711 µ-law in numpy, bit-exact with the stdlib ``audioop`` (deprecated on 3.11, gone in 3.13).

The 3CX stream itself is s16le PCM; µ-law is what ElevenLabs' ``ulaw_8000`` output carries, and what the tests use to
put speech through a simulated phone line.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

_BIAS = 0x84
_CLIP = 8159
_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)


def _encode_values(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.uint8]:
    value = pcm.astype(np.int32) >> 2
    negative = value < 0
    mask = np.where(negative, 0x7F, 0xFF)
    value = np.minimum(np.abs(value), _CLIP) + (_BIAS >> 2)
    seg = np.searchsorted(_SEG_END, value, side="left")
    code = (seg << 4) | ((value >> (seg + 1)) & 0xF)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


@functools.cache
def _encode_table() -> npt.NDArray[np.uint8]:
    return _encode_values(np.arange(65536, dtype=np.uint16).view(np.int16))


@functools.cache
def _decode_table() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _BIAS - t, t - _BIAS).astype(np.int16)


def ulaw_encode(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.uint8]:
    return _encode_table()[np.asarray(pcm, dtype=np.int16).view(np.uint16)]


def ulaw_decode(codes: npt.NDArray[np.uint8] | bytes) -> npt.NDArray[np.int16]:
    data = np.frombuffer(codes, dtype=np.uint8) if isinstance(codes, bytes | bytearray) else codes
    return _decode_table()[data]
