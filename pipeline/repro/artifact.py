"""The artifact between a bake job and its publish jobs: a directory a CI engine passes from one job to the next.

    DIR/image.raw      the built image
    DIR/record.json    what publishing needs and what the image must be: build id, stage ids, size, md5,
                       sha512, virtual size, the rendered property set, the rendered manifest, provenance
    DIR/artifact.json  {"id": sha256 of record.json's bytes}: the record's content address
    DIR/<name>.lock    the lock file the build was checked against, when there was one

Content-addressed like the stage cache: an edited record no longer matches its id, and an image whose
bytes are not the recorded ones fails the upload's single-pass measurement before anything is released.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.errors import BakeryError
from pipeline.common.files import write_atomically
from pipeline.common.run import run
from pipeline.manifest import Manifest, manifest_from_document
from pipeline.properties.render import PropertySet
from pipeline.publish.measure import Measurement, copy_measured, measure_file
from pipeline.repro.stages import StageIds

FORMAT = "bakery-artifact/1"
IMAGE = "image.raw"
RECORD = "record.json"
ADDRESS = "artifact.json"


@dataclass(frozen=True)
class Artifact:
    root: Path
    id: str
    record: dict

    @property
    def image_path(self) -> Path:
        return self.root / IMAGE

    @property
    def build_id(self) -> str:
        return self.record["build_id"]

    @property
    def stages(self) -> StageIds:
        return StageIds(**self.record["stages"])

    @property
    def measurement(self) -> Measurement:
        image = self.record["image"]
        return Measurement(size=image["size"], md5=image["md5"], sha512=image["sha512"])

    @property
    def propset(self) -> PropertySet:
        return PropertySet(properties=dict(self.record["properties"]), core=dict(self.record["core"]), findings=())

    def manifest(self) -> Manifest:
        entry = self.record["manifest"]
        return manifest_from_document(Path(entry["path"]), entry["document"], release_date=entry["release_date"],
                                      variables=entry["variables"])

    def to_dict(self) -> dict:
        return {"path": str(self.root), "id": self.id, "build_id": self.build_id, "image": self.record["image"]}


def write(out: Path, *, image: Path, manifest: Manifest, build_id: str, stages: StageIds, measured: Measurement | None,
          virtual_size: int | None, propset: PropertySet, provenance: dict, lock_file: Path | None, move: bool = False,
          on_read: Callable[[int], None] | None = None) -> Artifact:
    """Write DIR (which must be new or empty): the image (moved when it is a work file of ours, else copied
    sparse), then the record, then its address. An image not `measured` yet is measured on its one read."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BakeryError(f"{out}: not empty; an artifact is written into a new or empty directory",
                          hint="remove it, or give --out another directory")
    out.mkdir(parents=True, exist_ok=True)
    measured = _place(image, out / IMAGE, move=move, measured=measured, on_read=on_read)
    record = {
        "format": FORMAT, "build_id": build_id, "stages": stages.to_dict(),
        "image": {"file": IMAGE, "size": measured.size, "md5": measured.md5, "sha512": measured.sha512, "virtual_size": virtual_size},
        "properties": propset.properties, "core": propset.core,
        "manifest": {"path": str(manifest.path), "document": json.loads(manifest.rendered), "release_date": manifest.release_date,
                     "variables": manifest.variables},
        "provenance": provenance,
    }
    if lock_file:
        shutil.copyfile(lock_file, out / lock_file.name)
    data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    write_atomically(out / RECORD, data)
    artifact_id = hashlib.sha256(data).hexdigest()
    write_atomically(out / ADDRESS, (json.dumps({"format": FORMAT, "id": artifact_id}) + "\n").encode())
    return Artifact(out, artifact_id, record)


def _place(image: Path, destination: Path, *, move: bool, measured: Measurement | None,
           on_read: Callable[[int], None] | None) -> Measurement:
    """The image in the artifact, read at most once for a multi-GB file: a rename reads nothing (then the
    measurement, if unknown, is the one read); a copy (a cache entry must stay, or another filesystem) is
    sparse, and measures as it copies when the measurement is unknown."""
    if move:
        try:
            os.replace(image, destination)
            return measured or measure_file(destination, on_read=on_read)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
    if measured is None:
        return copy_measured(image, destination, on_read=on_read)
    run(["cp", "--sparse=always", "--reflink=auto", str(image), str(destination)], timeout=None)
    return measured


def load(root: Path) -> Artifact:
    """An artifact whose record is the one its address names and whose image has the recorded size."""
    root = Path(root)
    try:
        address = json.loads((root / ADDRESS).read_text())
        data = (root / RECORD).read_bytes()
    except (OSError, ValueError) as exc:
        raise BakeryError(f"{root}: not a bakery artifact ({exc.__class__.__name__}: {exc})",
                          hint="give the directory `invoke bake --out` wrote") from None
    if not isinstance(address, dict) or address.get("format") != FORMAT:
        raise BakeryError(f"{root / ADDRESS}: expected format {FORMAT}, got {address.get('format') if isinstance(address, dict) else address!r}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != address.get("id"):
        raise BakeryError(f"{root / RECORD}: its sha256 is {actual[:16]}..., the artifact's id is {str(address.get('id'))[:16]}...: "
                          "the record was changed after the bake", hint="bake again; an artifact is never edited")
    record = json.loads(data)
    image = root / IMAGE
    if not image.is_file() or image.is_symlink():
        raise BakeryError(f"{image}: missing (or not a regular file)", hint="the CI engine did not pass the whole artifact")
    if image.stat().st_size != record["image"]["size"]:
        raise BakeryError(f"{image}: {image.stat().st_size:,} bytes, the record says {record['image']['size']:,}",
                          hint="the image was changed or truncated after the bake; bake again")
    return Artifact(root, actual, record)
