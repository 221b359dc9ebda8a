"""What a Glance offers: its import methods, its stores, its API version (read, never assumed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pipeline.common.errors import BakeryError
from pipeline.glance.connect import Target


@dataclass(frozen=True)
class Capabilities:
    import_methods: tuple[str, ...]  # GET /v2/info/import
    stores: tuple[str, ...]  # GET /v2/info/stores (empty: a single-store Glance)
    default_store: str | None
    api_version: str  # the newest CURRENT/SUPPORTED version GET /versions lists

    def to_dict(self) -> dict:
        return asdict(self)


def discover(target: Target) -> Capabilities:
    http = target.glance.http_client
    methods = _get(http, "/v2/info/import").get("import-methods", {}).get("value") or []
    stores_body = _get(http, "/v2/info/stores", missing_ok=True)
    stores = stores_body.get("stores") or []
    default = next((s["id"] for s in stores if str(s.get("default")).lower() == "true"), None)
    versions = _get(http, "/versions").get("versions") or []
    current = sorted((v.get("id", "") for v in versions if v.get("status") in ("CURRENT", "SUPPORTED")), key=_version_key)
    return Capabilities(tuple(methods), tuple(s["id"] for s in stores), default, current[-1] if current else "unknown")


def _get(http, path: str, *, missing_ok: bool = False) -> dict:
    from glanceclient import exc as glance_exc

    try:
        _, body = http.get(path)
        return body or {}
    except (glance_exc.HTTPNotFound, glance_exc.HTTPBadRequest, glance_exc.HTTPMultipleChoices) as exc:
        if missing_ok or path == "/versions":
            return {}
        raise BakeryError(f"Glance does not answer {path}: {exc}") from None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.lstrip("v").split(".") if p.isdigit())
