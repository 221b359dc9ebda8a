"""Upload to Glance so that nothing is visible until the server's copy is verified.

The image is created private and hidden, with `bakery_state=uploading` and recommended=false; the upload
streams through the measuring reader; the server's checksum, os_hash_value and size must equal what was
sent. Only then is it made visible and recommended. Any failure (upload error, server restart, mismatch,
Ctrl-C) deletes the partial image; if the server cannot be reached to delete it, its id stays in a local
journal and the next run deletes it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import tenacity
from glanceclient import exc as glance_exc

from pipeline.build.image import BuiltImage
from pipeline.common.digests import DigestMemo
from pipeline.common.errors import BakeryError, PublishError
from pipeline.common.progress import progress, say
from pipeline.common.secrets import redact
from pipeline.glance.connect import Target
from pipeline.glance.images import GLANCE_FIELDS, STATE_KEY
from pipeline.properties.render import PropertySet
from pipeline.publish.measure import HashingReader, Measurement, remembered

log = logging.getLogger(__name__)


class ContentMismatch(PublishError):
    """The file sent is not the one that was measured when it was built: a corrupt cache entry."""


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

    def to_dict(self) -> dict:
        return asdict(self)


class Journal:
    """Ids of partial images this machine created and could not delete yet."""

    def __init__(self, directory: Path, target: Target):
        self.directory = directory
        self.target = target

    def add(self, image_id: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / image_id).write_text(json.dumps({"target": self.target.description}))

    def remove(self, image_id: str) -> None:
        (self.directory / image_id).unlink(missing_ok=True)

    def pending(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return [p.name for p in sorted(self.directory.iterdir()) if json.loads(p.read_text()).get("target") == self.target.description]

    def sweep(self) -> list[str]:
        """Delete partial images left by an earlier run; returns the ids removed."""
        removed = []
        for image_id in self.pending():
            try:
                image = self.target.glance.images.get(image_id)
                if image.get(STATE_KEY) is not None:
                    self.target.glance.images.delete(image_id)
                    removed.append(image_id)
            except glance_exc.HTTPNotFound:
                pass
            except Exception as exc:  # server still unreachable: keep the entry for next time
                log.warning("cannot delete partial image %s yet: %s", image_id, redact(str(exc)))
                continue
            self.remove(image_id)
        if removed:
            say(f"deleted {len(removed)} partial image(s) left by an earlier run: {', '.join(removed)}")
        return removed


def find_verified(target: Target, build_id: str) -> list[dict]:
    """Verified images of ours that came from the same build (hidden ones included)."""
    found = []
    for hidden in (False, True):
        filters = {"bakery_build_id": build_id, "status": "active"}
        if hidden:
            filters["os_hidden"] = True
        for image in target.glance.images.list(filters=filters):
            if image.get("owner") == target.project_id and image.get(STATE_KEY) is None:
                found.append(dict(image))
    return found


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
) -> Published:
    """Upload and verify. `expected`: what the bytes measured when they were made (a cache entry's record);
    sending anything else raises ContentMismatch after the partial image is deleted."""
    glance = target.glance
    staged = {**propset.properties, "recommended": "false", STATE_KEY: "uploading"}
    created = glance.images.create(
        name=name, visibility="private", os_hidden=True, tags=list(tags), **propset.core, **staged
    )
    image_id = created["id"]
    journal.add(image_id)
    say(f"created hidden image {image_id}; uploading {image.path.name}")
    try:
        measurement = _stream(glance, image_id, image.path)
        server = glance.images.get(image_id)
        if expected and (expected.size, expected.md5, expected.sha512) != (measurement.size, measurement.md5, measurement.sha512):
            raise ContentMismatch(f"{image.path} no longer has the bytes recorded when it was built (md5 {expected.md5}, now {measurement.md5})")
        _verify(server, measurement, remembered(memo, image.path))
        memo.put(image.path, size=measurement.size, md5=measurement.md5, sha512=measurement.sha512)
        glance.images.update(
            image_id,
            visibility=visibility,
            os_hidden=False,
            recommended=propset.properties.get("recommended", "true"),
            remove_props=[STATE_KEY],
        )
        final = glance.images.get(image_id)
    except BaseException as exc:
        deleted = _delete_partial(target, image_id, journal)
        outcome = "the partial image was deleted" if deleted else (
            f"the partial image {image_id} could not be deleted now (hidden, private); the next run deletes it"
        )
        if isinstance(exc, KeyboardInterrupt):
            say(f"interrupted: {outcome}")
            raise
        reason = exc.one_line() if isinstance(exc, BakeryError) else f"{type(exc).__name__}: {redact(str(exc))}"
        if isinstance(exc, ContentMismatch):
            raise ContentMismatch(f"{reason}; {outcome}") from None
        raise PublishError(f"publish failed: {reason}; {outcome}; the previous release is untouched") from None
    journal.remove(image_id)
    return published_from(final, uploaded=True)


def _stream(glance, image_id: str, path: Path) -> Measurement:
    size = path.stat().st_size
    with progress(f"upload {path.name}", size) as advance, HashingReader(path, on_read=advance) as reader:
        glance.images.upload(image_id, reader, image_size=size)
        if reader.read(1):  # the client stops at image_size; anything more means the file grew
            raise BakeryError(f"{path} grew during the upload")
        return reader.result()


def _verify(server: dict, sent: Measurement, known: Measurement | None) -> None:
    problems = []
    if server.get("status") != "active":
        problems.append(f"status is {server.get('status')!r}, expected 'active'")
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


def _delete_partial(target: Target, image_id: str, journal: Journal) -> bool:
    retry_s = float(os.environ.get("BAKERY_CLEANUP_RETRY_S", "30"))

    @tenacity.retry(
        stop=tenacity.stop_after_delay(retry_s),
        wait=tenacity.wait_exponential(multiplier=0.2, max=5),
        retry=tenacity.retry_if_not_exception_type(glance_exc.HTTPNotFound),
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
    journal.remove(image_id)
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
