"""The artifact between a bake job and its publish jobs: a directory a CI engine passes from one job to the next.

    DIR/image.raw      the built image; or, with the cache handoff, nothing: the image stays in the stage cache
                       (on storage every bake and publish runner mounts) and the record names its entry, so
                       a CI engine passes kilobytes between jobs, never the image's gigabytes
    DIR/record.json    what publishing needs and what the image must be: build id, stage ids, size, md5,
                       sha512, virtual size, the rendered property set, the rendered manifest, the facts
                       inspection read from the image, provenance
    DIR/artifact.json  {"id": sha256 of record.json's bytes}: the record's content address
    DIR/sbom.cdx.json  the image's bill of materials (CycloneDX), when it has Windows on it; the record holds its
                       sha256, which the published image carries as bakery_sbom_sha256
    DIR/boot.png       the guest's screen when the canary judged it ready (release notes show it)
    DIR/<name>.lock    the lock file the build was checked against, when there was one

Content-addressed like the stage cache: an edited record no longer matches its id, and an image whose
bytes are not the recorded ones fails the upload's single-pass measurement before anything is released.
The id only proves the record was not changed by accident: anyone who can edit an artifact can hash it again.
So a record is also checked field by field when it is loaded (ids are hex digests, properties strings, ...),
and publishing renders the property set again from the record's manifest and facts and refuses a record
that differs (chain.publish_artifact): nothing a publish can recompute is taken on trust.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.build.image import RecordedBake, RecordedFacts
from pipeline.common.digests import sha256_file
from pipeline.common.errors import BakeryError
from pipeline.common.files import write_atomically
from pipeline.common.paths import PROJECT_ROOT, project_relative
from pipeline.common.run import run
from pipeline.manifest import Manifest, manifest_from_document
from pipeline.properties.render import PropertySet
from pipeline.publish.measure import Measurement, copy_measured, measure_file
from pipeline.repro.stages import StageIds
from pipeline.sbom import SBOM_FILE, Sbom, load_sbom

FORMAT = "bakery-artifact/2"  # /2: facts, virtio-win version and source pin recorded; the manifest path project-relative
IMAGE = "image.raw"
RECORD = "record.json"
ADDRESS = "artifact.json"
PICTURE = "boot.png"


@dataclass(frozen=True)
class Artifact:
    root: Path
    id: str
    record: dict

    @property
    def image_path(self) -> Path:
        entry = self.record["image"].get("cache_entry")
        return _cached_image(self.root, entry) if entry else self.root / IMAGE

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

    @property
    def facts(self) -> RecordedFacts | None:
        facts = self.record["facts"]
        return RecordedFacts(facts["data"], facts["lint"]) if facts else None

    @property
    def bake(self) -> RecordedBake | None:
        version = self.record["virtio_win_version"]
        return RecordedBake({"virtio_win_version": version}) if version else None

    def sbom(self) -> Sbom | None:
        """The image's SBOM, checked against the sha256 the record names (and so against the artifact's id)."""
        entry = self.record.get("sbom")
        return load_sbom(self.root / SBOM_FILE, expected_sha256=entry["sha256"]) if entry else None

    @property
    def boot_picture(self) -> Path | None:
        """The canary's picture of the boot, when its bytes are the ones the record names."""
        canary = self.record.get("canary") or {}
        path = self.root / PICTURE
        if not canary.get("picture") or path.is_symlink() or not path.is_file() or sha256_file(path) != canary["picture_sha256"]:
            return None
        return path

    @property
    def source_sha256(self) -> str:
        return self.record["source_sha256"]

    def manifest(self) -> Manifest:
        """The manifest the bake rendered, validated again as any manifest is; a project-relative path is
        this checkout's (the bake and publish jobs of a pipeline run in checkouts of their own)."""
        entry = self.record["manifest"]
        return manifest_from_document(PROJECT_ROOT / entry["path"], entry["document"], release_date=entry["release_date"],
                                      variables=entry["variables"])

    def to_dict(self) -> dict:
        return {"path": str(self.root), "id": self.id, "build_id": self.build_id, "image": self.record["image"]}


def write(out: Path, *, image: Path, manifest: Manifest, build_id: str, stages: StageIds, measured: Measurement | None,
          virtual_size: int | None, propset: PropertySet, provenance: dict, lock_file: Path | None, facts=None,
          virtio_win_version: str | None = None, source_sha256: str, move: bool = False, cache_entry: str | None = None,
          on_read: Callable[[int], None] | None = None, sbom: Sbom | None = None,
          canary_picture: Path | None = None, canary_machine: str = "") -> Artifact:
    """Write DIR (which must be new or empty): the image (moved when it is a work file of ours, else copied
    sparse), then the record, then its address. An image not `measured` yet is measured on its one read."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BakeryError(f"{out}: not empty; an artifact is written into a new or empty directory",
                          hint="remove it, or give --out another directory")
    out.mkdir(parents=True, exist_ok=True)
    if cache_entry:  # the handoff through the shared stage cache: the image is read (measured) at most, never copied
        measured = measured or measure_file(image, on_read=on_read)
        where = {"file": None, "cache_entry": cache_entry}
    else:
        measured = _place(image, out / IMAGE, move=move, measured=measured, on_read=on_read)
        where = {"file": IMAGE}
    record = {
        "format": FORMAT, "build_id": build_id, "stages": stages.to_dict(),
        "image": {**where, "size": measured.size, "md5": measured.md5, "sha512": measured.sha512, "virtual_size": virtual_size},
        "properties": propset.properties, "core": propset.core,
        "manifest": {"path": project_relative(manifest.path), "document": json.loads(manifest.rendered),
                     "release_date": manifest.release_date, "variables": manifest.variables},
        "facts": {"data": facts.to_dict(), "lint": facts.lint_facts()} if facts else None,
        "virtio_win_version": virtio_win_version, "source_sha256": source_sha256,
        "provenance": provenance,
        "sbom": {"file": SBOM_FILE, "sha256": sbom.sha256} if sbom else None,
        "canary": None,
    }
    if sbom:
        sbom.write(out / SBOM_FILE)
    if canary_machine:
        if canary_picture:
            shutil.copyfile(canary_picture, out / PICTURE)
        record["canary"] = {"machine": canary_machine, "picture": PICTURE if canary_picture else None,
                            "picture_sha256": sha256_file(out / PICTURE) if canary_picture else None}
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
    if not (root / ADDRESS).exists() and not (root / RECORD).exists():
        raise BakeryError(f"{root}: no artifact here: the bake that writes it did not finish (it failed, was cancelled "
                          "or skipped), so there is nothing to publish", hint="see the bake job's own log; publish after a bake that succeeded")
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
    check_record(root / RECORD, record)
    entry = record["image"].get("cache_entry")
    image = _cached_image(root, entry) if entry else root / IMAGE
    if not image.is_file() or image.is_symlink():
        raise BakeryError(f"{image}: missing (or not a regular file)", hint="the CI engine did not pass the whole artifact")
    if image.stat().st_size != record["image"]["size"]:
        raise BakeryError(f"{image}: {image.stat().st_size:,} bytes, the record says {record['image']['size']:,}",
                          hint="the image was changed or truncated after the bake; bake again")
    return Artifact(root, actual, record)


def _cached_image(root: Path, cache_entry: str) -> Path:
    """The image a cache-handoff artifact names, in this runner's stage cache (BAKERY_CACHE_DIR)."""
    from pipeline.repro.cache import StageCache

    stage, stage_id = cache_entry.split("/", 1)
    found = StageCache().get(stage, stage_id)
    if found is None:
        raise BakeryError(f"{root / RECORD}: its image (stage cache entry {cache_entry[:18]}...) is not in this runner's stage cache "
                          f"({StageCache().root})", hint="mount the shared stage cache the bake job wrote (BAKERY_CACHE_DIR), "
                          "or bake again if it was evicted")
    return found.file(IMAGE)


HEX = {"sha256": re.compile(r"^[0-9a-f]{64}$"), "md5": re.compile(r"^[0-9a-f]{32}$"), "sha512": re.compile(r"^[0-9a-f]{128}$")}
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def check_record(path: Path, record: object) -> None:
    """Every field of a record has the shape the bake writes: a malformed one is a one-line refusal naming it,
    never a TypeError deep in a publish (an id is a hex digest, so it cannot be a path like ../x)."""
    def refuse(field: str, expected: str, value: object) -> BakeryError:
        return BakeryError(f"{path}: {field}: expected {expected}, got {_shown(value)}", hint="bake again; an artifact is never edited")

    def need(field: str, value: object, ok: bool, expected: str) -> None:
        if not ok:
            raise refuse(field, expected, value)

    need("record", record, isinstance(record, dict), "a JSON object")
    build_id = record.get("build_id")
    need("build_id", build_id, isinstance(build_id, str) and bool(HEX["sha256"].fullmatch(build_id)), "64 hex digits")
    stages = record.get("stages")
    need("stages", stages, isinstance(stages, dict) and set(stages) == set(StageIds.__dataclass_fields__), "the stage ids")
    for name, value in stages.items():
        need(f"stages.{name}", value, value is None or (isinstance(value, str) and bool(HEX["sha256"].fullmatch(value))), "64 hex digits")
    need("stages.build", stages["build"], stages["build"] is not None, "64 hex digits")
    image = record.get("image")
    need("image", image, isinstance(image, dict), "a JSON object")
    if image.get("file") is None:  # the cache handoff: the entry of the build stage, and no other
        need("image.cache_entry", image.get("cache_entry"), image.get("cache_entry") == f"build/{stages['build']}",
             f"build/{stages['build']}")
    else:
        need("image.file", image.get("file"), image.get("file") == IMAGE, repr(IMAGE))
    for field in ("size", "virtual_size"):
        value = image.get(field)
        need(f"image.{field}", value, type(value) is int and 0 < value < 2**63, "a positive integer")
    for field in ("md5", "sha512"):
        need(f"image.{field}", image.get(field), isinstance(image.get(field), str) and bool(HEX[field].fullmatch(image[field])),
             f"a {field} hex digest")
    for section in ("properties", "core"):
        values = record.get(section)
        need(section, values, isinstance(values, dict), "a JSON object")
        for key, value in values.items():
            allowed = (int, str) if section == "core" else (str,)
            need(f"{section}.{key}", value, type(value) in allowed, "a string" if section == "properties" else "a string or integer")
    manifest = record.get("manifest")
    need("manifest", manifest, isinstance(manifest, dict), "a JSON object")
    need("manifest.path", manifest.get("path"), isinstance(manifest.get("path"), str) and bool(manifest["path"]), "a path")
    need("manifest.document", manifest.get("document"), isinstance(manifest.get("document"), dict), "a JSON object")
    need("manifest.release_date", manifest.get("release_date"),
         isinstance(manifest.get("release_date"), str) and bool(ISO_DATE.fullmatch(manifest["release_date"])), "a YYYY-MM-DD date")
    variables = manifest.get("variables")
    need("manifest.variables", variables, isinstance(variables, dict) and all(isinstance(v, str) for v in variables.values()),
         "a JSON object of strings")
    facts = record.get("facts")
    need("facts", facts, facts is None or (isinstance(facts, dict) and isinstance(facts.get("data"), dict)
                                           and isinstance(facts.get("lint"), dict)), "null or the facts inspection recorded")
    for field in ("virtio_win_version", "source_sha256"):
        need(field, record.get(field), record.get(field) is None or isinstance(record.get(field), str), "a string")
    sbom = record.get("sbom")
    need("sbom", sbom, sbom is None or (isinstance(sbom, dict) and sbom.get("file") == SBOM_FILE and isinstance(sbom.get("sha256"), str)
                                        and bool(HEX["sha256"].fullmatch(sbom["sha256"]))), f"null or {{file: {SBOM_FILE}, sha256}}")
    canary = record.get("canary")
    need("canary", canary, canary is None or (isinstance(canary, dict) and isinstance(canary.get("machine"), str)
                                              and canary.get("picture") in (None, PICTURE)
                                              and (canary.get("picture") is None or (isinstance(canary.get("picture_sha256"), str)
                                                   and bool(HEX["sha256"].fullmatch(canary["picture_sha256"]))))),
         f"null or {{machine, picture: {PICTURE}, picture_sha256}}")
    need("provenance", record.get("provenance"), isinstance(record.get("provenance"), dict), "a JSON object")
    for key, value in record["provenance"].items():
        need(f"provenance.{key}", value, value is None or isinstance(value, str), "a string")


def _shown(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
