"""The 3CX side of the worker: client-credentials tokens, the Call Control REST client and the command gateway."""

from hub.pbx.callcontrol import CallControlClient, succeeded
from hub.pbx.errors import PbxError
from hub.pbx.gateway import CallControlGateway
from hub.pbx.token import TokenProvider, jwt_expiry

__all__ = ["CallControlClient", "CallControlGateway", "PbxError", "TokenProvider", "jwt_expiry", "succeeded"]
