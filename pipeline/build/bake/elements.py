"""diskimage-builder elements: resolved with DIB's own dependency code and run with its dib-run-parts.

Like disk-image-create, every phase directory of every resolved element is merged into one hooks tree
(two elements shipping the same script name is an error), and each phase runs in one dib-run-parts call,
which orders scripts by name and sources environment.d first.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.errors import BakeryError
from pipeline.common.paths import ELEMENTS, PROJECT_ROOT
from pipeline.common.progress import say
from pipeline.common.run import run

DEFAULT_ELEMENTS = ("virtio-boot-drivers", "virtio-firstboot", "qemu-guest-agent")
PHASES = ("pre-install.d", "install.d", "post-install.d")
MERGED = ("environment.d", *PHASES)
PHASE_TIMEOUT_S = 1800
EXCEPTION_PREFIX = re.compile(r"^(?:[a-z_]\w*\.)+[A-Z]\w*: ")


@dataclass(frozen=True)
class Element:
    name: str
    path: Path


def search_path(extra: tuple[str, ...] = ()) -> list[Path]:
    """Site element directories first (they may override ours), then the project's."""
    return [Path(p) for p in extra] + [ELEMENTS]


def resolve(requested: tuple[str, ...], paths: list[Path]) -> list[Element]:
    from diskimage_builder import element_dependencies

    for path in paths:
        if not path.is_dir():
            raise BakeryError(f"element directory {path} does not exist")
    try:
        resolved = element_dependencies.get_elements(list(requested), ":".join(str(p) for p in paths))
    except Exception as exc:  # DIB raises plain Exceptions and its own MissingElementException
        raise BakeryError(f"cannot resolve elements {', '.join(requested)}: {' '.join(str(exc).split())}") from None
    return sorted((Element(name, Path(path)) for name, path in resolved), key=lambda e: e.name)


def content_sha256(elements: list[Element]) -> str:
    """A hash of every file of the resolved elements: part of the build id."""
    digest = hashlib.sha256()
    for element in elements:
        for file in sorted(p for p in element.path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(f"{element.name}/{file.relative_to(element.path)}\0{os.access(file, os.X_OK)}\0".encode())
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def merge_hooks(elements: list[Element], hooks: Path) -> None:
    owners: dict[str, str] = {}
    for element in elements:
        for phase in MERGED:
            source = element.path / phase
            if not source.is_dir():
                continue
            (hooks / phase).mkdir(parents=True, exist_ok=True)
            for script in sorted(source.iterdir()):
                key = f"{phase}/{script.name}"
                if key in owners:
                    raise BakeryError(f"elements {owners[key]} and {element.name} both ship {key}; rename one of them")
                owners[key] = element.name
                (hooks / phase / script.name).symlink_to(script.resolve())


def run_phases(hooks: Path, environment: dict[str, str], log: Path) -> None:
    dib_run_parts = _dib_run_parts()
    env = {
        **os.environ,
        **environment,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")]),
        "TMP_HOOKS_PATH": str(hooks),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for phase in PHASES:
        if not (hooks / phase).is_dir():
            continue
        say(f"elements: {phase}")
        proc = run(["bash", dib_run_parts, hooks / phase], env=env, check=False, timeout=PHASE_TIMEOUT_S)
        with open(log, "ab") as out:
            out.write(proc.stdout or b"")
            out.write(proc.stderr or b"")
        if proc.returncode != 0:
            raise BakeryError(f"element phase {phase} failed: {_failure(proc)} (log: {log})")


def _dib_run_parts() -> Path:
    import diskimage_builder

    script = Path(diskimage_builder.__file__).parent / "lib" / "dib-run-parts"
    if not script.is_file():
        raise BakeryError("diskimage-builder's dib-run-parts is missing", hint="reinstall with `make deps`")
    return script


def _failure(proc) -> str:
    """The failing script and the last thing it said on stderr (dib-run-parts stops at the first failure)."""
    stderr = (proc.stderr or b"").decode(errors="replace").splitlines()
    script, said = None, None
    for line in (line.strip() for line in stderr):
        if line.startswith("dib-run-parts Running "):
            script, said = Path(line.split()[-1]).name, None
        elif line and not line.startswith(("+", "dib-run-parts")):
            said = EXCEPTION_PREFIX.sub("", line)  # a Python script's BakeryError: its message, not its class
    where = f"script {script}" if script else "a script"
    return f"{where} exited with {proc.returncode}: {said or 'no message on stderr'}"
