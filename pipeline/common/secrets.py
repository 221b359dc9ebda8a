"""Keep credentials out of every line we print or write.

Anything that could carry a secret (cloud config, environment) registers the value here as soon as it is
read; every log line, error message and JSON report goes through redact() before it leaves the process.
"""

from __future__ import annotations

import os
import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()

# Auth keys that hold secrets in clouds.yaml / keystoneauth option names.
SECRET_KEYS = frozenset(
    {
        "password",
        "token",
        "application_credential_secret",
        "secret",
        "passcode",
        "totp",
        "client_secret",
        "access_token",
        "auth_token",
    }
)
SECRET_ENV = re.compile(r"^OS_.*(PASSWORD|TOKEN|SECRET|PASSCODE)$")
MASK = "***"
# user:password@ in any URL, whether or not the password was registered (a manifest's source URL, say)
URL_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/@:]*):(?P<password>[^\s/@]*)@")
# Query-string parameters that carry a credential: tokens, Swift temp URLs, S3/GCS/Azure pre-signed URLs.
URL_QUERY_SECRET = re.compile(
    r"(?P<name>[?&;](?:[A-Za-z0-9_.-]*[_.-])?(?:token|sig|signature|temp_url_sig|password|passwd|secret|api_?key|apikey|"
    r"credential|x-amz-credential|x-amz-security-token|auth))=(?P<value>[^&#\s'\"]*)", re.IGNORECASE)


def register(value: object) -> None:
    """Remember a secret value so redact() can remove it; short values are still masked."""
    if isinstance(value, str) and value:
        with _lock:
            _secrets.add(value)


def register_mapping(mapping: dict) -> None:
    """Register every value stored under a secret-looking key, at any depth."""
    for key, value in mapping.items():
        if isinstance(value, dict):
            register_mapping(value)
        elif str(key).lower() in SECRET_KEYS or str(key).lower().endswith(("password", "secret", "token")):
            register(value)


def register_environment(environ: dict[str, str] | None = None) -> None:
    for key, value in (environ if environ is not None else os.environ).items():
        if SECRET_ENV.match(key):
            register(value)


def redact(text: str) -> str:
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, MASK)
    text = URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return URL_QUERY_SECRET.sub(lambda m: f"{m['name']}={MASK}" if m["value"] else m[0], text)


def register_url(url: str) -> None:
    """A URL's embedded password, and the credentials in its query string (?token=, &sig=, X-Amz-Signature=),
    are secrets from the moment the URL is read: in any form, quoted or not, they are masked wherever they appear."""
    from urllib.parse import unquote

    match = URL_PASSWORD.search(url)
    values = [match["password"]] if match and match["password"] else []
    values += [m["value"] for m in URL_QUERY_SECRET.finditer(url) if m["value"]]
    for value in values:
        register(value)
        register(unquote(value))
