"""Upload to Glance so that nothing is visible until the server's copy is verified.

1. The image id is derived from the project and the build (uuid5, with an attempt number): two runs
   publishing the same build race for one id, Glance lets exactly one create it, and the other waits for
   that image instead of uploading the same bytes twice. A deleted image's id is never reused by Glance, so
   a retry takes the next attempt number.
2. The id is journaled, then the image is created private, hidden, not recommended, with
   `bakery_state=uploading` and a lease (lease.py).
3. Before any byte is sent, what the server can refuse up front is tried: the requested visibility (a
   member may not publicize by Glance's default policy) and the project's quota.
4. The upload streams through the measuring reader; the server's checksum, os_hash_value and size must
   equal what was sent. A transient failure (connection reset, 5xx) deletes the partial image and starts
   once more on a fresh one.
5. Only then is it made visible (the release step decides what is recommended).
Any failure, Ctrl-C included, deletes the partial image; if the server cannot be reached to delete it, the
journal and the lease let a later run delete it.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from dataclasses import asdict, dataclass, replace

import tenacity
from glanceclient import exc as glance_exc
from keystoneauth1 import exceptions as ksa_exceptions

from pipeline.build.image import BuiltImage
from pipeline.common.digests import DigestMemo
from pipeline.common.errors import BakeryError, PublishError
from pipeline.common.progress import say
from pipeline.common.secrets import redact
from pipeline.common.settings import decimal
from pipeline.glance.connect import Target
from pipeline.glance.images import GLANCE_FIELDS, STATE_KEY, list_including_hidden
from pipeline.properties.render import PropertySet
from pipeline.publish.journal import Journal
from pipeline.publish.lease import LEASE_KEY, UPLOADER_KEY, lease_properties, lease_state, uploading
from pipeline.publish.measure import Measurement, remembered
from pipeline.publish.methods import Route, deliver

log = logging.getLogger(__name__)
IMAGE_ID_NAMESPACE = uuid.UUID("0f4c5a1e-8b6d-5c3e-9a7f-2d1b6e8c4a90")
MAX_ATTEMPTS = 8
WAIT_POLL_S = 2.0
TRANSIENT = (glance_exc.CommunicationError, glance_exc.HTTPServiceUnavailable, glance_exc.HTTPBadGateway,
             glance_exc.HTTPInternalServerError, ksa_exceptions.ConnectFailure, ConnectionError)
RELEASE_KEYS = (STATE_KEY, UPLOADER_KEY, LEASE_KEY)
DIRECT = Route("direct", "raw", (), False, True, None, "direct upload: one PUT, no staging")


class ContentMismatch(PublishError):
    """The file sent is not the one that was measured when it was built: a corrupt cache entry."""


class Refused(PublishError):
    """The server refuses something up front (policy, quota): nothing was uploaded."""


@dataclass(frozen=True)
class Published:
    id: str
    name: str
    checksum: str
    os_hash_value: str
    size: int
    virtual_size: int | None
    properties: dict[str, str]
    uploaded: bool  # False when an identical verified image was found and reused
    sent_bytes: int = 0  # bytes that went over the wire from here (a staged qcow2 is fewer than the raw)

    def to_dict(self) -> dict:
        return asdict(self)


def image_id_for(target: Target, build_id: str, attempt: int) -> str:
    return str(uuid.uuid5(IMAGE_ID_NAMESPACE, f"{target.project_id}/{build_id}/{attempt}"))


def find_verified(target: Target, build_id: str) -> list[dict]:
    """Verified images of ours that came from the same build (hidden ones included)."""
    return [image for image in list_including_hidden(target, {"bakery_build_id": build_id, "status": "active"})
            if image.get("owner") == target.project_id and image.get(STATE_KEY) is None]


def reuse(target: Target, existing: list[dict], measurement: Measurement) -> Published | None:
    """An already-published image with the same build id and the same bytes, if there is one."""
    for image in existing:
        if image.get("checksum") == measurement.md5 and image.get("os_hash_value") == measurement.sha512:
            return published_from(image, uploaded=False)
    return None


def upload(
    target: Target,
    name: str,
    image: BuiltImage,
    propset: PropertySet,
    *,
    visibility: str,
    tags: tuple[str, ...],
    memo: DigestMemo,
    journal: Journal,
    expected: Measurement | None = None,
    build_id: str | None = None,
    route: Route | None = None,
) -> Published:
    """Upload (or import) and verify. `expected`: what the bytes measured when they were made (a cache
    entry's record); sending anything else raises ContentMismatch after the partial image is deleted.
    `route`: how this cloud takes the bytes (methods.py; default: the direct upload)."""
    job = _Job(target, name, image, propset, visibility, tags, memo, journal, expected, image.path.stat().st_size,
               route or DIRECT)
    build_id = build_id or propset.properties.get("bakery_build_id") or uuid.uuid4().hex
    retried = False
    for attempt in range(MAX_ATTEMPTS):
        image_id = image_id_for(target, build_id, attempt)
        with uploading(image_id):
            result = _attempt(job, image_id, may_retry=not retried)
        if isinstance(result, Published):
            return result
        retried = retried or result == "retry"
    raise PublishError(f"{target.name}: no free image id after {MAX_ATTEMPTS} attempts for build {build_id[:12]}")


@dataclass(frozen=True)
class _Job:
    target: Target
    name: str
    image: BuiltImage
    propset: PropertySet
    visibility: str
    tags: tuple[str, ...]
    memo: DigestMemo
    journal: Journal
    expected: Measurement | None
    size: int
    route: Route


def _attempt(job: _Job, image_id: str, *, may_retry: bool) -> Published | str:
    """One image id: a Published, or "next" (take the next id) or "retry" (once, after a transient failure)."""
    target, image, expected, memo, journal = job.target, job.image, job.expected, job.memo, job.journal
    journal.intend(image_id)
    claimed = _claim(target, image_id, job)
    if claimed is not None:  # the id is taken: somebody else's upload of this build, or a burned id
        journal.forget(image_id)
        return claimed
    try:
        _preflight(target, image_id, job.visibility, job.size)
        delivery = deliver(target, image_id, image.path, job.size, job.route, known=expected or remembered(memo, image.path))
        measurement = delivery.measured
        server = target.glance.images.get(image_id)
        if expected and (expected.size, expected.md5, expected.sha512) != (measurement.size, measurement.md5, measurement.sha512):
            raise ContentMismatch(f"{image.path} no longer has the bytes recorded when it was built (md5 {expected.md5}, "
                                  f"now {measurement.md5})")
        _verify(server, measurement, remembered(memo, image.path), job.route)
        memo.put(image.path, size=measurement.size, md5=measurement.md5, sha512=measurement.sha512)
        target.glance.images.update(image_id, visibility=job.visibility, os_hidden=False, remove_props=list(RELEASE_KEYS))
        final = target.glance.images.get(image_id)
    except BaseException as exc:
        outcome = _discard(target, image_id, journal)
        if isinstance(exc, KeyboardInterrupt):
            say(f"interrupted: {outcome}")
            raise
        if isinstance(exc, TRANSIENT) and may_retry and outcome.startswith("the partial image was deleted"):
            say(f"upload of {image_id} failed ({_reason(exc)}); {outcome}; starting once more on a fresh image")
            return "retry"
        raise _failure(exc, outcome, target) from None
    journal.forget(image_id)
    return replace(published_from(final, uploaded=True), sent_bytes=delivery.sent_bytes)


def _claim(target: Target, image_id: str, job: _Job):
    """Create the hidden image under image_id: None when created; else the existing one to reuse (a
    Published), or "next" (the id is burned or was abandoned: take the next attempt)."""
    staged = {**job.propset.properties, "recommended": "false", STATE_KEY: "uploading", **lease_properties(job.size)}
    # a staged qcow2 is declared qcow2; the import's conversion makes it the raw image the properties describe
    core = {**job.propset.core, **({"disk_format": "qcow2"} if job.route.stage_format == "qcow2" else {})}
    try:
        target.glance.images.create(id=image_id, name=job.name, visibility="private", os_hidden=True, tags=list(job.tags),
                                    **core, **staged)
        say(f"created hidden image {image_id}")
        return None
    except glance_exc.HTTPConflict:
        return _wait_for_other(target, image_id)


def _wait_for_other(target: Target, image_id: str):
    """Another run holds image_id: wait while its lease holds, then reuse its verified image or move on."""
    announced = False
    while True:
        try:
            other = dict(target.glance.images.get(image_id))
        except glance_exc.HTTPNotFound:
            return "next"  # deleted (Glance never gives a deleted image's id out again)
        if other.get(STATE_KEY) is None:
            if other.get("status") == "active":
                say(f"{image_id} holds this build already (published by another run): not uploading again")
                return published_from(other, uploaded=False)
            return "next"
        state = lease_state(other)
        if state.expired:
            _delete(target, image_id)
            say(f"deleted the abandoned partial image {image_id} ({state.why})")
            return "next"
        if not announced:
            say(f"another run is uploading this build as {image_id} ({state.why}): waiting for it")
            announced = True
        time.sleep(WAIT_POLL_S)


def _preflight(target: Target, image_id: str, visibility: str, size: int) -> None:
    """Try what the server would refuse after the upload, while the image holds no data."""
    glance = target.glance
    if visibility != "private":
        try:
            glance.images.update(image_id, visibility=visibility)
            glance.images.update(image_id, visibility="private")
        except glance_exc.HTTPForbidden as exc:
            policy = "publicize_image" if visibility == "public" else f"{visibility} images"
            raise Refused(f"{target.name}: Glance refuses visibility {visibility} for this account ({policy} policy: "
                          f"{_reason(exc)})",
                          hint=f"set image.visibility to community or shared in the manifest, or publish with a role the "
                               f"cloud allows to make images {visibility} (admin by Glance's default policy)") from None
    _check_quota(target, size)


def _check_quota(target: Target, size: int) -> None:
    """Glance's unified-limits quota (GET /v2/info/usage), when the cloud enforces one."""
    try:
        _, body = target.glance.http_client.get("/v2/info/usage")
        usage = (body or {}).get("usage") or {}
    except Exception:  # an older Glance without the usage API: the upload itself will say
        return
    needs = {"image_size_total": math.ceil(size / 2**20), "image_count_uploading": 0, "image_count_total": 0}
    for key, extra in needs.items():
        entry = usage.get(key) or {}
        limit, used = entry.get("limit"), entry.get("usage")
        if limit is None or used is None or limit < 0:
            continue
        if used > limit or (key == "image_size_total" and used >= limit and extra):
            raise Refused(f"{target.name}: the project is at its {key} quota ({used} of {limit}"
                          f"{' MiB' if key == 'image_size_total' else ''}): Glance would refuse this upload",
                          hint="delete old images or ask the cloud's operators for more quota")
        if key == "image_size_total" and used + extra > limit:
            say(f"quota: this upload puts the project over image_size_total ({used} + {extra} > {limit} MiB); the next one will be refused")


def _verify(server: dict, sent: Measurement, known: Measurement | None, chosen: Route) -> None:
    """What the server stored must be the raw image the bake produced, whatever route the bytes took."""
    problems = []
    if server.get("status") != "active":
        problems.append(f"status is {server.get('status')!r}, expected 'active'")
    if server.get("disk_format") != "raw":
        problems.append(f"disk_format is {server.get('disk_format')!r}, expected 'raw' (no conversion on import?)")
    stored = {s for s in (server.get("stores") or "").split(",") if s}
    missing = [s for s in chosen.stores if s not in stored] if chosen.all_stores_must_succeed else []
    if missing:
        problems.append(f"not in store(s) {', '.join(missing)}")
    if server.get("size") != sent.size:
        problems.append(f"size {server.get('size')} != {sent.size} sent")
    if server.get("checksum") != sent.md5:
        problems.append(f"checksum (md5) {server.get('checksum')} != {sent.md5} sent")
    if server.get("os_hash_algo") == "sha512" and server.get("os_hash_value") != sent.sha512:
        problems.append("os_hash_value (sha512) differs from what was sent")
    if known and (known.md5, known.size) != (sent.md5, sent.size):
        problems.append(f"the file changed while it was published (md5 before {known.md5}, sent {sent.md5})")
    if problems:
        raise BakeryError("verification failed: " + "; ".join(problems))


def _failure(exc: BaseException, outcome: str, target: Target) -> PublishError:
    if isinstance(exc, Refused):
        return Refused(f"{exc}; {outcome}; nothing was uploaded", hint=exc.hint)
    reason = exc.one_line() if isinstance(exc, BakeryError) else _reason(exc)
    if isinstance(exc, ContentMismatch):
        return ContentMismatch(f"{reason}; {outcome}")
    return PublishError(f"publish to {target.name} failed: {reason}; {outcome}; the previous release is untouched")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, glance_exc.HTTPOverLimit):  # 413
        return "the server refused the size (storage quota or image_size_cap exceeded)"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {redact(text)}"


def _discard(target: Target, image_id: str, journal: Journal) -> str:
    if _delete(target, image_id):
        journal.forget(image_id)
        return "the partial image was deleted"
    return f"the partial image {image_id} could not be deleted now (hidden, private, leased); a later run deletes it"


def _delete(target: Target, image_id: str) -> bool:
    retry_s = decimal(os.environ.get("BAKERY_CLEANUP_RETRY_S", "30"), "BAKERY_CLEANUP_RETRY_S", low=0, high=3600, unit="seconds")

    @tenacity.retry(
        stop=tenacity.stop_after_delay(retry_s),
        wait=tenacity.wait_exponential(multiplier=0.2, max=5),
        # a refused credential or permission does not come back by itself: only a server that is away is waited for
        retry=tenacity.retry_if_not_exception_type((glance_exc.HTTPNotFound, glance_exc.HTTPUnauthorized, glance_exc.HTTPForbidden,
                                                    ksa_exceptions.Unauthorized, ksa_exceptions.Forbidden)),
        reraise=True,
    )
    def delete() -> None:
        target.glance.images.delete(image_id)

    try:
        delete()
    except glance_exc.HTTPNotFound:
        pass
    except Exception as exc:
        log.warning("deleting partial image %s failed: %s", image_id, redact(str(exc)))
        return False
    return True


def published_from(image: dict, *, uploaded: bool) -> Published:
    return Published(
        id=image["id"],
        name=image.get("name") or "",
        checksum=image.get("checksum") or "",
        os_hash_value=image.get("os_hash_value") or "",
        size=int(image.get("size") or 0),
        virtual_size=image.get("virtual_size"),
        properties={k: v for k, v in image.items() if k not in GLANCE_FIELDS},
        uploaded=uploaded,
    )
