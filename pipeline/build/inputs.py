"""The build's pinned inputs (source image, virtio-win, installation media) as local files matching their pins."""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from pipeline.common.digests import DigestMemo, sha256_file
from pipeline.common.errors import BakeryError
from pipeline.common.progress import progress
from pipeline.common.secrets import redact
from pipeline.diskimage.info import GiB
from pipeline.diskimage.safety import check_image
from pipeline.manifest import Manifest, Source

DOWNLOAD_CHUNK = 1024 * 1024
DOWNLOAD_SLACK = 256 * 1024 * 1024  # a qcow2 file may be a little larger than its virtual size (metadata)
MAX_MEDIA_BYTES = 64 * GiB  # an installation ISO or virtio-win: a few GiB


def source_label(manifest: Manifest, source: Source | None = None) -> str:
    """How the user knows an input: the manifest, the line and field that pin it, and the location."""
    source = source or manifest.source
    keys = tuple(source.field.split(".")) + (("url",) if source.is_url else ("path",))
    file, line = manifest.positions.get(keys, manifest.positions.get(keys[:-1], (manifest.path, None)))
    where = f"{file}:{line}" if line else str(file)
    return f"{where}: {source.field} ({redact(source.location)})"


def local_path(source: Source) -> Path | None:
    """Where a pinned input is on this machine without fetching anything: a path, a file:// URL, or None."""
    if not source.is_url:
        return Path(source.location)
    if source.location.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(source.location).path))
    return None


def locate_source(manifest: Manifest, downloads: Path, memo: DigestMemo) -> Path:
    """The source image as a local file whose sha256 matches the manifest's pin and that passes the gate.

    A local file is checked by the gate before it is hashed: a 2 TiB sparse "disk" is refused at once
    instead of after hours of reading zeros. A download is capped at what the virtual size limit allows."""
    source = manifest.source
    label = source_label(manifest)
    limit = manifest.max_virtual_gib * GiB
    if source.is_url:
        path = _download(source, downloads, manifest, max_bytes=limit + DOWNLOAD_SLACK)
    else:
        path = Path(source.location)
    check_image(path, label=label, declared=source.format, max_virtual_size=limit)
    if not source.is_url:
        verify_pin(path, source, manifest, memo)
    return path


def fetch_pinned(source: Source, manifest: Manifest, downloads: Path, memo: DigestMemo) -> Path:
    """A pinned input (virtio-win ISO or directory, installation media) as a local file matching its pin."""
    path = _download(source, downloads, manifest, max_bytes=MAX_MEDIA_BYTES) if source.is_url else Path(source.location)
    if not path.exists():
        raise manifest.error((*source.field.split("."), "path"), f"no such file: {path}")
    if not (path.is_file() or path.is_dir()):
        raise manifest.error((*source.field.split("."), "path"), f"{path} is not a regular file or directory")
    verify_pin(path, source, manifest, memo)
    return path


def tree_sha256(directory: Path) -> str:
    """The pin of a directory: sha256 of its `sha256sum` listing, sorted by path, so it can be checked with
    `(cd DIR && find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum) | sha256sum`.

    A symbolic link (or anything but files and directories) is refused: the bake would copy what it points
    at, from anywhere on this machine, into the image."""
    files = []
    for path in sorted(directory.rglob("*")):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            kind = f"a symbolic link to {os.readlink(path)}" if path.is_symlink() else "not a regular file"
            raise BakeryError(f"{directory}: {path.relative_to(directory)} is {kind}: refused, a pinned directory may hold "
                              "only files and directories")
        if path.is_file():
            files.append(path.relative_to(directory).as_posix())
    listing = "".join(f"{sha256_file(directory / name)}  {name}\n" for name in sorted(files, key=lambda s: s.encode()))
    return hashlib.sha256(listing.encode()).hexdigest()


def verify_pin(path: Path, source: Source, manifest: Manifest, memo: DigestMemo) -> None:
    if path.is_dir():
        try:
            actual = tree_sha256(path)
        except BakeryError as refused:
            raise BakeryError(f"{source_label(manifest, source)}: {refused}") from None
    else:
        actual = memo.get(path).get("sha256")
    if actual is None:
        with progress(f"verify {path.name}", path.stat().st_size) as advance:
            actual = sha256_file(path, on_read=advance)
        memo.put(path, sha256=actual)
    if actual != source.sha256:
        raise manifest.error((*source.field.split("."), "sha256"), f"pin mismatch for {path}: manifest pins {source.sha256}, "
                             f"the file has {actual}")


def _download(source: Source, downloads: Path, manifest: Manifest, *, max_bytes: int) -> Path:
    """Fetch a URL once into the download cache, named by its pinned sha256; never more than max_bytes."""
    target = downloads / source.sha256
    if target.is_file():
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    url = source.location
    shown = redact(url)
    url_field = (*source.field.split("."), "url")
    digest = hashlib.sha256()
    received = 0
    try:
        with open(partial, "wb") as dst, _opened(url) as (chunks, total), progress(f"fetch {shown}", total) as advance:
            for chunk in chunks:
                received += len(chunk)
                if received > max_bytes:
                    raise _TooLarge()
                digest.update(chunk)
                dst.write(chunk)
                advance(len(chunk))
    except _TooLarge:
        partial.unlink(missing_ok=True)
        raise manifest.error(url_field, f"{shown} sends more than {max_bytes:,} bytes, more than the image.max_virtual_gib "
                             "limit allows: refused") from None
    except (OSError, requests.RequestException) as exc:
        partial.unlink(missing_ok=True)
        raise manifest.error(url_field, f"cannot fetch {shown}: {_reason(exc)}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != source.sha256:
        partial.unlink(missing_ok=True)
        raise manifest.error((*source.field.split("."), "sha256"), f"pin mismatch for {shown}: manifest pins {source.sha256}, "
                             f"download has {digest.hexdigest()}")
    partial.replace(target)
    return target


class _TooLarge(Exception):
    pass


@contextmanager
def _opened(url: str) -> Iterator[tuple[Iterator[bytes], int]]:
    """Chunks of a file:// or http(s):// URL, and the size announced (0 when unknown)."""
    if url.startswith("file://"):
        local = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
        if not local.is_file():
            raise OSError(f"{local} is not a regular file")
        with open(local, "rb") as handle:
            yield iter(lambda: handle.read(DOWNLOAD_CHUNK), b""), local.stat().st_size
        return
    with requests.get(url, stream=True, timeout=(30, 120)) as response:
        response.raise_for_status()
        yield response.iter_content(DOWNLOAD_CHUNK), int(response.headers.get("Content-Length") or 0)


def _reason(exc: BaseException) -> str:
    """What went wrong, without the URL requests repeats (it may carry a password; redact() removes it anyway)."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    if isinstance(exc, requests.ConnectionError):
        return "the server cannot be reached"
    if isinstance(exc, requests.Timeout):
        return "the server did not answer in time"
    return redact(str(getattr(exc, "strerror", None) or exc))
