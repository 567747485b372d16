"""Errors of the voice agent. Provider and transport errors are translated here once; callers never see httpx or
websockets exceptions, and no error ever carries an API key.

    VoiceError
    ├── MissingExtra          an optional dependency is not installed (names the extra to install)
    ├── VoiceConfigError      the configuration cannot work (names the setting)
    ├── PolicyError           a bad receptionist policy file (``file:line: problem``; also a RuleError)
    ├── AudioStreamError      the PBX audio stream failed (status and reason)
    └── ProviderError         a cloud provider answered with an error (provider, status, type, message)
"""

from __future__ import annotations

from hub.audio.participant import StreamError
from hub.rules.loader import RuleError


class VoiceError(Exception):
    """Base of every error the voice agent raises."""


class MissingExtra(VoiceError, ImportError):
    def __init__(self, what: str, extra: str, hint: str = "") -> None:
        self.extra = extra
        message = f"{what} is not installed: pip install 'masterlinc[{extra}]'"
        super().__init__(f"{message}{'; ' + hint if hint else ''}")


class VoiceConfigError(VoiceError, ValueError):
    pass


class PolicyError(RuleError, VoiceError):
    """A problem in a receptionist policy file: ``source:line: problem``."""


class AudioStreamError(StreamError, VoiceError):
    """The PBX audio stream failed (``status``: the last HTTP status); see :class:`hub.audio.stream.StreamError`."""


class ProviderError(VoiceError):
    """A provider's error. ``message`` is the provider's text with any secret removed."""

    def __init__(self, provider: str, message: str, *, status: int | None = None, kind: str | None = None) -> None:
        self.provider = provider
        self.status = status
        self.kind = kind
        self.message = message
        where = f" (HTTP {status})" if status is not None else ""
        label = f" {kind}" if kind else ""
        super().__init__(f"{provider}{where}{label}: {message}")

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in (408, 409, 429) or self.status >= 500


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every secret (and any 8+ character piece of one a provider echoes back) replaced."""
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, "[redacted]")
        for size in (16, 8):
            if len(secret) > size:
                for i in range(len(secret) - size + 1):
                    piece = secret[i : i + size]
                    if piece in text:
                        text = text.replace(piece, "[redacted]")
    return text
