"""Client exceptions that escape a stage (a server gone mid-run, a token revoked, a policy refusal), said in
one line with the target they came from, instead of an internal error and a traceback."""

from __future__ import annotations

from glanceclient import exc as glance_exc
from keystoneauth1 import exceptions as ksa_exceptions

from pipeline.common.secrets import redact

_last_target = "the cloud"


def remember_target(description: str) -> None:
    global _last_target
    _last_target = description


def describe(exc: BaseException) -> tuple[str, str] | None:
    """(one line, hint) for a Glance or Keystone client exception; None for anything else."""
    text = redact(" ".join(str(exc).split()))
    where = _last_target
    if isinstance(exc, glance_exc.CommunicationError) or isinstance(exc, ksa_exceptions.ConnectFailure):
        return f"{where}: the connection failed ({text})", "the server went away or is unreachable; run again once it answers"
    if isinstance(exc, (ksa_exceptions.ConnectTimeout, ksa_exceptions.RequestTimeout)):
        return f"{where}: the server did not answer in time ({text})", "api_timeout in clouds.yaml sets the limit"
    if isinstance(exc, (glance_exc.HTTPUnauthorized, ksa_exceptions.Unauthorized)):
        return f"{where}: the credentials were refused during the run ({text})", "a credential revoked or expired mid-run; check it"
    if isinstance(exc, glance_exc.HTTPForbidden):
        return f"{where}: Glance refused the request ({text})", "the account's role does not allow it under the cloud's policy"
    if isinstance(exc, glance_exc.HTTPException):
        return f"{where}: Glance answered {type(exc).__name__} ({text})", "see Glance's log; nothing else was changed"
    if isinstance(exc, ksa_exceptions.ClientException):
        return f"{where}: {type(exc).__name__} ({text})", "check clouds.yaml or the OS_* variables"
    return None
