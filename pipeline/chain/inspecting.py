"""`invoke inspect`: the facts of a disk image file or of a Glance image."""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.common.errors import BakeryError, disk_full
from pipeline.common.progress import progress
from pipeline.common.report import Report
from pipeline.common.units import human_size
from pipeline.glance.connect import Target, connect
from pipeline.glance.images import download, fetch_image
from pipeline.windows.inspection import ImageFacts, inspect_image


def inspect_reference(reference: str, report: Report, *, cloud: str | None = None, workdir: Path) -> ImageFacts:
    """`invoke inspect`: a local image file, or a Glance image id (downloaded to a temporary file first)."""
    path = Path(reference)
    facts = inspect_image(path, workdir=workdir) if path.exists() else _inspect_glance_image(reference, cloud, workdir)
    report.details["facts"] = facts.to_dict()
    report.ok = True
    return facts


def _inspect_glance_image(image_id: str, cloud: str | None, workdir: Path) -> ImageFacts:
    target = connect(cloud)
    return inspect_glance_image(target, fetch_image(target, image_id), workdir)


def inspect_glance_image(target: Target, image: dict, workdir: Path) -> ImageFacts:
    """Download a Glance image into a sparse temporary file and read its facts; the file goes with the call."""
    with downloaded(target, image, workdir) as local:
        return inspect_image(local, workdir=workdir)


@contextlib.contextmanager
def downloaded(target: Target, image: dict, workdir: Path) -> Iterator[Path]:
    """A Glance image's bytes in a sparse temporary file under `workdir`, removed when the block ends."""
    image_id = str(image["id"])
    safe_id = re.sub(r"[^A-Za-z0-9-]", "", image_id)[:64]  # the id is the server's word: never a path part as is
    workdir.mkdir(parents=True, exist_ok=True)
    size = int(image.get("size") or 0)
    # unbuffered: a full disk is met by the write that fills it, not again by the close that flushes a buffer
    with tempfile.NamedTemporaryFile(prefix=f"inspect-{safe_id}-", suffix=".img", dir=workdir, buffering=0) as local:
        try:
            with progress(f"download {safe_id}", size) as advance:
                download(target, image_id, local, on_read=advance)
            local.flush()
        except OSError as exc:
            if not disk_full(exc):
                raise
            free = shutil.disk_usage(workdir).free + local.tell()
            raise BakeryError(f"{workdir}: no space left for image {safe_id}: it holds up to {human_size(size)} (runs of "
                              f"zeros are skipped) and {human_size(free)} were free; the partial copy was removed",
                              hint="free space there, or point BAKERY_STATE_DIR at a larger disk") from None
        yield Path(local.name)
