"""Stage 2: from the manifest's pinned source to the raw image that gets published.

The chain takes an existing disk image (raw or qcow2): it fetches it and checks its sha256 pin. With a
`bake:` section the offline virtio refresh (pipeline/bake.py) turns it into a raw image with the pinned
drivers; without one it is converted to a sparse raw file when needed. Either way the result is a
BuiltImage, and the source file is only ever read.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path

import requests

from pipeline import __version__, elements
from pipeline import bake as bake_stage
from pipeline.bake import BakeResult
from pipeline.errors import ManifestError
from pipeline.inspection import ImageFacts, check_qcow2, inspect_image
from pipeline.manifest import Manifest, Source
from pipeline.measure import DigestMemo, ImageInfo, image_info, sha256_file
from pipeline.progress import progress, say
from pipeline.run import run

DOWNLOAD_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class BuiltImage:
    path: Path | None  # the raw image to publish (None: not at hand, e.g. linting a manifest alone)
    info: ImageInfo | None
    source_path: Path
    source_sha256: str
    temporary: bool  # a work file of ours (deleted after publishing), not the user's source
    facts: ImageFacts | None = None  # what inspection found in the image (baked images)
    baked: BakeResult | None = None
    installed_virtio_win: str | None = None  # the virtio-win release Setup loaded, for an install without a bake
    cache_entry: str | None = None  # "<stage>/<id>" when the image lives in the stage cache

    @property
    def virtio_win_version(self) -> str | None:
        return self.baked.virtio_win_version if self.baked else self.installed_virtio_win

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "format": self.info.format if self.info else None,
            "virtual_size": self.info.virtual_size if self.info else None,
            "source": str(self.source_path),
            "source_sha256": self.source_sha256,
            "cache_entry": self.cache_entry,
            **({"bake": self.baked.to_dict()} if self.baked else {}),
            **({"facts": self.facts.to_dict()} if self.facts else {}),
        }


def origin_sha256(manifest: Manifest) -> str:
    """The pin of what the chain starts from: the source image, or the installation media."""
    return manifest.source.sha256 if manifest.source else manifest.install.media.sha256


@dataclass(frozen=True)
class StageIds:
    """Content addresses of the stages: each is the sha256 of everything that determines its output."""

    install: str | None  # the disk Setup leaves (installs only)
    build: str  # the raw image: bake, or convert (+ inspection for installs)
    measure: str  # size, md5, sha512 of that raw image

    def to_dict(self) -> dict:
        return {"install": self.install, "build": self.build, "measure": self.measure}


def _digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def stage_ids(manifest: Manifest) -> StageIds:
    from pipeline.install import templates_sha256
    from pipeline.lock import tool_versions

    tools = tool_versions()
    install_id = None
    if manifest.install:
        install_id = _digest({"stage": "install", **manifest.install.to_dict(), "templates_sha256": templates_sha256(),
                              "tools": tools})
    build = {"stage": "bake" if manifest.bake else "convert", "input": install_id or manifest.source.sha256, "tools": tools,
             "inspect": bool(manifest.install)}
    if manifest.bake:
        build.update(virtio_win_sha256=manifest.bake.virtio_win.sha256, drivers=list(manifest.bake.drivers),
                     elements_sha256=elements.content_sha256(bake_stage.resolve_elements(manifest.bake)),
                     qcow2=manifest.bake.qcow2, epoch=manifest.bake.epoch)
    build_stage = _digest(build)
    return StageIds(install_id, build_stage, _digest({"stage": "measure", "input": build_stage}))


def build_id(manifest: Manifest, *, template_sha256: str, stages: StageIds | None = None) -> str:
    """Content address of a release: the image's bytes (its stage id), the manifest and the properties template."""
    stages = stages or stage_ids(manifest)
    return _digest({
        "manifest_sha256": manifest.sha256,
        "release_date": manifest.release_date,
        "build_stage": stages.build,
        "properties_template_sha256": template_sha256,
        "pipeline_version": __version__,
    })


@dataclass(frozen=True)
class RecordedFacts:
    """Facts as a cache entry recorded them: what properties and lint read, without mounting the image."""

    data: dict
    lint: dict

    def to_dict(self) -> dict:
        return self.data

    def lint_facts(self) -> dict:
        return dict(self.lint)


@dataclass(frozen=True)
class RecordedBake:
    data: dict

    @property
    def virtio_win_version(self) -> str:
        return self.data["virtio_win_version"]

    def to_dict(self) -> dict:
        return self.data


def cacheable(image: BuiltImage) -> bool:
    """A raw source used as it is needs no cache entry: it is its own output."""
    return image.temporary


def from_cache(entry, manifest: Manifest) -> BuiltImage:
    record = entry.record
    raw = entry.file("image.raw")
    facts = RecordedFacts(record["facts"], record["lint_facts"]) if record.get("facts") else None
    baked = RecordedBake(record["bake"]) if record.get("bake") else None
    return BuiltImage(raw, image_info(raw), Path(record["source_path"]), origin_sha256(manifest), temporary=False,
                      facts=facts, baked=baked, installed_virtio_win=record.get("installed_virtio_win"),
                      cache_entry=f"{entry.stage}/{entry.id}")


def to_cache(cache, stage_id: str, image: BuiltImage) -> BuiltImage:
    """Move a freshly built image into the cache; the work directory it came from is removed."""
    record = {
        "source_path": str(image.source_path),
        "facts": image.facts.to_dict() if image.facts else None,
        "lint_facts": image.facts.lint_facts() if image.facts else None,
        "bake": image.baked.to_dict() if image.baked else None,
        "installed_virtio_win": image.installed_virtio_win,
    }
    files = {"image.raw": image.path}
    qcow2 = getattr(image.baked, "qcow2", None)
    if qcow2:
        files["image.qcow2"] = qcow2
        record["bake"] = {**record["bake"], "qcow2": "image.qcow2 in the cache entry"}
    workdir = image.path.parent
    entry = cache.put("build", stage_id, files, record)
    shutil.rmtree(workdir, ignore_errors=True)
    return replace(image, path=entry.file("image.raw"), temporary=False, cache_entry=f"build/{stage_id}")


def locate_source(manifest: Manifest, downloads: Path, memo: DigestMemo) -> Path:
    """The source image as a local file whose sha256 matches the manifest's pin."""
    return fetch_pinned(manifest.source, manifest, downloads, memo)


def fetch_pinned(source: Source, manifest: Manifest, downloads: Path, memo: DigestMemo) -> Path:
    """A pinned input (source image, virtio-win ISO) as a local file whose sha256 matches its pin."""
    path = _download(source, downloads, manifest) if source.is_url else Path(source.location)
    if not path.exists():
        raise ManifestError(str(manifest.path), f"{source.field}.path", f"no such file: {path}")
    verify_pin(path, source, manifest, memo)
    return path


def tree_sha256(directory: Path) -> str:
    """The pin of a directory: sha256 of its `sha256sum` listing, sorted by path, so it can be checked with
    `(cd DIR && find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum) | sha256sum`."""
    files = sorted((p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()), key=lambda s: s.encode())
    listing = "".join(f"{sha256_file(directory / name)}  {name}\n" for name in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def verify_pin(path: Path, source: Source, manifest: Manifest, memo: DigestMemo) -> None:
    if path.is_dir():
        actual = tree_sha256(path)
    else:
        actual = memo.get(path).get("sha256")
    if actual is None:
        with progress(f"verify {path.name}", path.stat().st_size) as advance:
            actual = sha256_file(path, on_read=advance)
        memo.put(path, sha256=actual)
    if actual != source.sha256:
        raise ManifestError(
            str(manifest.path), f"{source.field}.sha256", f"pin mismatch for {path}: manifest pins {source.sha256}, the file has {actual}"
        )


def _download(source: Source, downloads: Path, manifest: Manifest) -> Path:
    """Fetch a URL source once into the download cache, named by its pinned sha256."""
    target = downloads / source.sha256
    if target.is_file():
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    url = source.location
    digest = hashlib.sha256()
    try:
        if url.startswith("file://"):
            local = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
            with open(local, "rb") as src, open(partial, "wb") as dst:
                with progress(f"fetch {local.name}", local.stat().st_size) as advance:
                    while chunk := src.read(DOWNLOAD_CHUNK):
                        digest.update(chunk)
                        dst.write(chunk)
                        advance(len(chunk))
        else:
            with requests.get(url, stream=True, timeout=60) as response:
                response.raise_for_status()
                total = int(response.headers.get("Content-Length") or 0)
                with open(partial, "wb") as dst, progress(f"fetch {url}", total) as advance:
                    for chunk in response.iter_content(DOWNLOAD_CHUNK):
                        digest.update(chunk)
                        dst.write(chunk)
                        advance(len(chunk))
    except (OSError, requests.RequestException) as exc:
        partial.unlink(missing_ok=True)
        raise ManifestError(str(manifest.path), f"{source.field}.url", f"cannot fetch {url}: {exc}") from None
    if digest.hexdigest() != source.sha256:
        partial.unlink(missing_ok=True)
        raise ManifestError(
            str(manifest.path), f"{source.field}.sha256", f"pin mismatch for {url}: manifest pins {source.sha256}, download has {digest.hexdigest()}"
        )
    partial.replace(target)
    return target


def build(manifest: Manifest, source_path: Path, workdir: Path, *, virtio_win: Path | None = None) -> BuiltImage:
    """The raw image to publish: baked when the manifest says so, else the source (converted if qcow2)."""
    planned = preview(manifest, source_path)
    origin = origin_sha256(manifest)
    if manifest.bake:
        result = bake_stage.bake(manifest.bake, source_path, virtio_win, workdir)
        return BuiltImage(result.raw, image_info(result.raw), source_path, origin, temporary=True,
                          facts=result.facts, baked=result)
    if planned.info.format == "raw":
        return planned
    converted = _convert(source_path, workdir, origin)
    if manifest.install:  # what Setup left is checked against the manifest by the facts-based lint rules
        try:
            return replace(converted, facts=inspect_image(converted.path, workdir=workdir / "inspect"))
        except BaseException:
            discard(converted)
            raise
    return converted


def _convert(source_path: Path, workdir: Path, origin: str) -> BuiltImage:
    check_qcow2(source_path)
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / "image.raw"
    partial = workdir / "image.raw.part"
    say(f"convert {source_path.name} (qcow2) to raw")
    try:
        run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", source_path, partial], timeout=6 * 3600)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return BuiltImage(target, image_info(target), source_path, origin, temporary=True)


def discard(image: BuiltImage) -> None:
    if image.temporary:
        shutil.rmtree(image.path.parent, ignore_errors=True)


def preview(manifest: Manifest, source_path: Path) -> BuiltImage:
    """What build() would hand on, without writing anything (for plan and lint)."""
    info = image_info(source_path)
    expected = manifest.source.format if manifest.source else None
    if expected and info.format != expected:
        raise ManifestError(str(manifest.path), "source.format", f"manifest says {expected}, but qemu-img reads {source_path} as {info.format}")
    if info.format not in ("raw", "qcow2"):
        raise ManifestError(str(manifest.path), "source", f"{source_path} is {info.format}; expected a raw or qcow2 image")
    return BuiltImage(source_path, info, source_path, origin_sha256(manifest), temporary=False)
