"""Finding partial images again: a local journal of what this machine is creating, and the server itself.

The journal records the id of an image *before* it is created (ids are deterministic, see upload.py), so
bookkeeping that cannot be written stops the run while nothing exists yet. Entries are kept per target
identity (auth URL, region, project), not per cloud name: a run under another name for the same project
(after a credential rotation) still finds them. Entries are written atomically under their own names, and
an unreadable one is set aside and reported, never a reason to fail. The sweep also lists the project's
images that are still marked uploading: a lost journal does not mean a lost image. Either way only an image
whose lease is over is deleted (lease.py).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from pathlib import Path

from glanceclient import exc as glance_exc

from pipeline.common.errors import BakeryError
from pipeline.common.files import write_atomically
from pipeline.common.progress import say
from pipeline.common.secrets import redact
from pipeline.glance.connect import Target
from pipeline.glance.images import STATE_KEY, list_including_hidden
from pipeline.publish.lease import lease_state

log = logging.getLogger(__name__)


class Journal:
    def __init__(self, directory: Path, target: Target):
        self.root = directory
        self.directory = directory / target.identity
        self.target = target
        self.unreadable: list[str] = []

    def intend(self, image_id: str) -> None:
        """Record an image about to be created; raises (nothing created yet) when the journal cannot be written."""
        entry = {"image_id": image_id, "target": self.target.description, "recorded": dt.datetime.now(dt.timezone.utc).isoformat()}
        try:
            write_atomically(self.directory / f"{image_id}.json", json.dumps(entry), durable=True)
        except OSError as exc:
            raise BakeryError(f"cannot write the publish journal in {self.directory}: {exc.strerror}; nothing was created",
                              hint="free space on that file system (or set BAKERY_STATE_DIR elsewhere) and run again") from None

    def forget(self, image_id: str) -> None:
        (self.directory / f"{image_id}.json").unlink(missing_ok=True)

    def pending(self) -> list[str]:
        """Image ids recorded and not forgotten; an unreadable entry is moved aside and reported."""
        if not self.directory.is_dir():
            return []
        ids = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                ids.append(str(uuid.UUID(json.loads(path.read_text())["image_id"])))
            except (OSError, ValueError, KeyError, TypeError):
                self._set_aside(path)
        return ids

    def _set_aside(self, path: Path) -> None:
        aside = self.root / "unreadable"
        aside.mkdir(parents=True, exist_ok=True)
        try:
            path.replace(aside / f"{path.name}.{uuid.uuid4().hex[:8]}")
        except OSError:
            pass
        self.unreadable.append(path.name)
        say(f"journal: entry {path.name} was unreadable and is set aside in {aside}; the server-side sweep still finds its image")

    def sweep(self) -> list[str]:
        """Delete partial images left by earlier runs (journaled here, or found on the server); returns their ids."""
        removed = []
        for image_id in self.pending():
            outcome = self._clean(image_id)
            if outcome in ("deleted", "gone", "verified"):
                self.forget(image_id)
            if outcome == "deleted":
                removed.append(image_id)
        for image in leftovers(self.target):
            if image["id"] not in removed and self._clean(image["id"], image) == "deleted":
                removed.append(image["id"])
        if removed:
            say(f"deleted {len(removed)} partial image(s) left by an earlier run: {', '.join(removed)}")
        return removed

    def _clean(self, image_id: str, image: dict | None = None) -> str:
        glance = self.target.glance
        try:
            image = image or dict(glance.images.get(image_id))
            if image.get(STATE_KEY) is None:
                return "verified"
            state = lease_state(image)
            if not state.expired:
                return "live"
            glance.images.delete(image_id)
            return "deleted"
        except glance_exc.HTTPNotFound:
            return "gone"
        except Exception as exc:  # the server is still unreachable, or refuses: keep the entry for next time
            log.warning("cannot clean up partial image %s yet: %s", image_id, redact(str(exc)))
            return "kept"


def leftovers(target: Target) -> list[dict]:
    """The project's images still marked as uploading (hidden or not)."""
    found: dict[str, dict] = {}
    try:
        for image in list_including_hidden(target, {STATE_KEY: "uploading"}):
            if image.get("owner") == target.project_id:
                found[image["id"]] = image
    except Exception as exc:  # listing may be forbidden or fail: the journal is the other way in
        log.warning("cannot list partial images: %s", redact(str(exc)))
    return sorted(found.values(), key=lambda i: i["id"])
