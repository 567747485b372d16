"""Errors of the 3CX side, translated once from HTTP statuses and httpx exceptions::

PbxError (code: one of D§7's error codes, reason: the PBX's reasontext when it gave one)
├── PbxUnauthorized   401 after one token re-fetch
├── PbxForbidden      403: the DN is outside the API integration's scope
├── PbxNotFound       404: unknown or gone participant, device or DN
├── PbxInvalidState   422: the action does not fit the leg's state or device
├── PbxRateLimited    429
└── PbxUnavailable    5xx, timeouts, refused connections
"""

from __future__ import annotations

from schemas.common import ErrorCode


class PbxError(Exception):
    code = ErrorCode.PBX_UNAVAILABLE

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None) -> None:
        self.status = status
        self.reason = reason
        super().__init__(message)


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


_BY_STATUS: dict[int, type[PbxError]] = {
    401: PbxUnauthorized,
    403: PbxForbidden,
    404: PbxNotFound,
    422: PbxInvalidState,
    429: PbxRateLimited,
}


def from_status(status: int, reason: str | None, what: str) -> PbxError:
    cls = _BY_STATUS.get(status, PbxUnavailable if status >= 500 else PbxInvalidState)
    return cls(f"{what}: PBX answered {status}" + (f" ({reason})" if reason else ""), status=status, reason=reason)
