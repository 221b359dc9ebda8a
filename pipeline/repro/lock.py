"""Lock files: every input of a build resolved to a hash, next to the manifest and reviewed in git.

`invoke lock --manifest manifests/x.yaml` writes `manifests/x.lock`: the rendered manifest (the release date
and variables included, so one lock is one release), the sha256 pin of every file the build reads (source
image or installation media and the image chosen in it, virtio-win, config files), the content hash of
every element and template, and the versions of the tools that shape the bytes (the pipeline and its
source, qemu-img, ntfs-3g, hivex, libfaketime, QEMU). A build that finds the lock compares everything and
refuses the first difference, naming it with both hashes. `rebuild --lock` rebuilds from the lock alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.build.bake import elements
from pipeline.build.bake.refresh import resolve_elements
from pipeline.common.digests import sha256_file
from pipeline.common.errors import BakeryError
from pipeline.common.files import write_atomically
from pipeline.common.paths import PROJECT_ROOT, TEMPLATES, project_relative, state_dir
from pipeline.common.run import run
from pipeline.common.toolversions import tool_versions
from pipeline.manifest import Manifest, manifest_from_document

LOCK_VERSION = 1


@dataclass(frozen=True)
class Lock:
    path: Path
    text: str

    @property
    def data(self) -> dict:
        return json.loads(self.text)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def pins(self) -> dict[str, str]:
        return self.data["pins"]


def lock_path(manifest_path: Path) -> Path:
    return manifest_path.with_suffix(".lock")


def pins(manifest: Manifest) -> dict[str, str]:
    """Everything this build reads, by name; the same names appear in errors."""
    found: dict[str, str] = {}
    if manifest.source:
        found["source"] = manifest.source.sha256
    if manifest.install:
        spec = manifest.install
        found["install.media"] = spec.media.sha256
        found["install.image"] = f"index={spec.image_index}" if spec.image_index is not None else f"name={spec.image_name}"
        found["install.virtio_win"] = spec.virtio_win.sha256
        for name, source in spec.config_files:
            found[f"install.config_files.{name}"] = sha256_file(Path(source)) if Path(source).is_file() else "missing"
        for template in ("autounattend.xml.j2", "firstlogon.cmd.j2"):
            found[f"templates/{template}"] = sha256_file(TEMPLATES / template)
    if manifest.bake:
        found["bake.virtio_win"] = manifest.bake.virtio_win.sha256
        for element in resolve_elements(manifest.bake):
            found[f"elements/{element.name}"] = elements.content_sha256([element])
    if manifest.provision:
        for step in manifest.provision.steps:
            for source in (step.file, step.config):
                if source:
                    found[source.field] = source.sha256
        for template in ("provision/runner.ps1", "provision/sysprep-unattend.xml"):
            found[f"templates/{template}"] = sha256_file(TEMPLATES / template)
    found["templates/properties.yaml.j2"] = sha256_file(TEMPLATES / "properties.yaml.j2")
    for tool, version in tool_versions().items():
        found[f"tools/{tool}"] = version
    found["manifest"] = manifest.sha256
    return found


def render(manifest: Manifest) -> str:
    document = {
        "lock_version": LOCK_VERSION,
        "manifest_path": project_relative(manifest.path),
        "release_date": manifest.release_date,
        "variables": manifest.variables,
        "document": json.loads(manifest.rendered),
        "pins": pins(manifest),
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def write(manifest: Manifest, path: Path | None = None) -> Lock:
    path = path or lock_path(manifest.path)
    text = render(manifest)
    write_atomically(path, text)
    return Lock(path, text)


def load(path: Path) -> Lock:
    try:
        text = path.read_text()
        data = json.loads(text)
    except OSError as exc:
        raise BakeryError(f"{path}: cannot read the lock file: {exc.strerror}") from None
    except ValueError as exc:
        raise BakeryError(f"{path}: not a lock file (invalid JSON: {exc})") from None
    if not isinstance(data, dict) or data.get("lock_version") != LOCK_VERSION or not isinstance(data.get("pins"), dict):
        raise BakeryError(f"{path}: not a lock file of version {LOCK_VERSION}; run `invoke lock` again")
    return Lock(path, text)


def verify(manifest: Manifest, lock: Lock) -> None:
    """Refuse the first input whose hash differs from the lock's, naming it and both hashes."""
    expected, actual = lock.pins, pins(manifest)
    for name in [*sorted((set(expected) | set(actual)) - {"manifest"}), "manifest"]:
        if expected.get(name) != actual.get(name):
            raise BakeryError(
                f"{lock.path}: {name}: the lock pins {expected.get(name, 'nothing')}, this build has {actual.get(name, 'nothing')}",
                hint="if the change is intended, run `invoke lock` and review the diff",
            )


def remember(lock: Lock) -> Path:
    """Keep a copy by its sha256, so `rebuild --image` finds it even without the git history."""
    store = state_dir() / "locks"
    store.mkdir(parents=True, exist_ok=True)
    target = store / f"{lock.sha256}.lock"
    target.write_text(lock.text)
    return target


def find(sha256: str, *, manifest: str | None, commit: str | None) -> Lock:
    """A lock by its sha256: from the local store, else from git at the commit the image records."""
    stored = state_dir() / "locks" / f"{sha256}.lock"
    if stored.is_file():
        return Lock(stored, stored.read_text())
    if manifest and commit:
        lock_file = lock_path(Path(manifest)).as_posix()
        proc = _git(PROJECT_ROOT, "show", f"{commit.removesuffix('+dirty')}:{lock_file}")
        if proc and proc.returncode == 0 and hashlib.sha256(proc.stdout).hexdigest() == sha256:
            return Lock(PROJECT_ROOT / lock_file, proc.stdout.decode())
    raise BakeryError(f"no lock file with sha256 {sha256} (not in {state_dir() / 'locks'}, not in git at {commit or 'no commit'})")


def manifest_of(lock: Lock) -> Manifest:
    """The manifest exactly as it was rendered when the lock was written."""
    data = lock.data
    path = (PROJECT_ROOT / data["manifest_path"]).resolve()
    return manifest_from_document(path, data["document"], release_date=data["release_date"], variables=data["variables"])


def git_commit(path: Path) -> str | None:
    """The commit of the repository holding path, with +dirty when its directory has uncommitted changes."""
    head = _git(path.parent, "rev-parse", "HEAD")
    if not head or head.returncode != 0:
        return None
    dirty = _git(path.parent, "status", "--porcelain", "--", ".").stdout.strip()
    return head.stdout.decode().strip() + ("+dirty" if dirty else "")


def _git(directory: Path, *args: str):
    """git in directory, or None where git is not installed."""
    try:
        return run(["git", "-C", directory, *args], check=False, timeout=60)
    except BakeryError:
        return None
