"""Errors of the 3CX side, translated once from HTTP statuses and httpx exceptions::

PbxError (code: one of D§7's error codes, reason: the PBX's reasontext when it gave one)
├── PbxUnauthorized   401 after one token re-fetch
├── PbxForbidden      403: the DN is outside the API integration's scope
├── PbxNotFound       404: unknown or gone participant, device or DN
├── PbxInvalidState   422: the action does not fit the leg's state or device
├── PbxRateLimited    429 (``retry_after``: the PBX's Retry-After, in seconds, when it gave one)
└── PbxUnavailable    5xx, timeouts, refused connections

``refused``: the PBX answered 429 or 503, so it did not carry the request out; such a request may be sent again.
"""

from __future__ import annotations

import ssl

from schemas.common import ErrorCode


class PbxError(Exception):
    code = ErrorCode.PBX_UNAVAILABLE

    def __init__(
        self, message: str, *, status: int | None = None, reason: str | None = None, retry_after: float | None = None
    ) -> None:
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(message)

    @property
    def refused(self) -> bool:
        """The PBX said it did not carry the request out (429 Too Many Requests, 503 Service Unavailable)."""
        return self.status in REFUSED


class PbxUnauthorized(PbxError):
    code = ErrorCode.UNAUTHORIZED


class PbxForbidden(PbxError):
    code = ErrorCode.FORBIDDEN


class PbxNotFound(PbxError):
    code = ErrorCode.NOT_FOUND


class PbxInvalidState(PbxError):
    code = ErrorCode.INVALID_STATE


class PbxRateLimited(PbxError):
    code = ErrorCode.RATE_LIMITED


class PbxUnavailable(PbxError):
    code = ErrorCode.PBX_UNAVAILABLE


REFUSED = frozenset({429, 503})

_BY_STATUS: dict[int, type[PbxError]] = {
    401: PbxUnauthorized,
    403: PbxForbidden,
    404: PbxNotFound,
    422: PbxInvalidState,
    429: PbxRateLimited,
}


def from_status(status: int, reason: str | None, what: str, *, retry_after: float | None = None) -> PbxError:
    cls = _BY_STATUS.get(status, PbxUnavailable if status >= 500 else PbxInvalidState)
    message = f"{what}: PBX answered {status}" + (f" ({reason})" if reason else "")
    return cls(message, status=status, reason=reason, retry_after=retry_after)


def retry_after(value: str | None) -> float | None:
    """A Retry-After header in seconds (RFC 9110 delay-seconds; an HTTP date or garbage gives None)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def unreachable(what: str, exc: BaseException) -> PbxUnavailable:
    """A request that got no answer. An untrusted TLS certificate says what to do, since no retry will fix it."""
    chain: BaseException | None = exc
    while chain is not None:
        if isinstance(chain, ssl.SSLCertVerificationError):
            detail = chain.verify_message or "certificate verify failed"
            return PbxUnavailable(
                f"{what}: the PBX's TLS certificate is not trusted ({detail}); give its CA as the PBX's ca_file "
                "(ML_PBXS__<n>__CA_FILE) or install a certificate from a public CA"
            )
        chain = chain.__cause__ or chain.__context__
    return PbxUnavailable(f"{what}: {type(exc).__name__}")
