"""The build's pinned inputs (source image, virtio-win, installation media) as local files matching their pins."""

from __future__ import annotations

import hashlib
import urllib.parse
from pathlib import Path

import requests

from pipeline.common.digests import DigestMemo, sha256_file
from pipeline.common.errors import ManifestError
from pipeline.common.progress import progress
from pipeline.manifest import Manifest, Source

DOWNLOAD_CHUNK = 1024 * 1024


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
