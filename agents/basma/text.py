"""Text helpers: sentence splitting of streamed replies, word normalisation, WER, and what part of a reply the caller
heard before a barge-in."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "no", "e.g", "i.e", "etc", "vs"}
_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)|\n+")
_WORD = re.compile(r"[a-z0-9']+")


class SentenceSplitter:
    """Feed text deltas as they stream in; get whole sentences as soon as each one ends."""

    def __init__(self, min_chars: int = 2) -> None:
        self._buffer = ""
        self._min_chars = min_chars

    def push(self, delta: str) -> list[str]:
        self._buffer += delta
        out: list[str] = []
        start = 0
        for match in _END.finditer(self._buffer):
            candidate = self._buffer[start : match.end()]
            words = candidate.strip().split()
            last = words[-1].rstrip(".!?\"')]").lower() if words else ""
            if match.group().startswith(".") and last in _ABBREVIATIONS:
                continue
            if len(candidate.strip()) >= self._min_chars:
                out.append(candidate.strip())
                start = match.end()
        self._buffer = self._buffer[start:]
        return out

    def flush(self) -> str | None:
        rest, self._buffer = self._buffer.strip(), ""
        return rest or None


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("-", " "))


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over the reference's length."""
    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref)


@dataclass(frozen=True)
class Spoken:
    """A sentence of a reply and where its audio sits in the reply's audio (ms from the reply's start)."""

    text: str
    start_ms: float
    end_ms: float


def heard_part(spoken: Sequence[Spoken], heard_ms: float) -> str:
    """The text the caller heard when ``heard_ms`` of the reply had been played: whole sentences, then the share of
    the next sentence's words that its played fraction covers (an estimate: speech rate is taken as even)."""
    parts: list[str] = []
    for s in spoken:
        if heard_ms >= s.end_ms:
            parts.append(s.text)
            continue
        if heard_ms > s.start_ms and s.end_ms > s.start_ms:
            tokens = s.text.split()
            share = int(len(tokens) * (heard_ms - s.start_ms) / (s.end_ms - s.start_ms))
            if share:
                parts.append(" ".join(tokens[:share]))
        break
    return " ".join(parts)
