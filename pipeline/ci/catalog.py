"""A catalog: the manifests of a folder (files starting with "_" are shared parts, not families), and for
each what the CI jobs need to know: a job-safe name, the family it releases, the clouds it goes to."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.errors import BakeryError, MissingVariable
from pipeline.common.sinks import script_word
from pipeline.manifest import load_manifest


@dataclass(frozen=True)
class Entry:
    path: Path  # the manifest file
    manifest: str  # as jobs name it: relative to where they run, when it is inside it
    slug: str  # job-name safe, unique in the catalog
    family: tuple[str, ...]  # the release family's values: what a publish must be serialized on
    clouds: tuple[str, ...]  # () = the job's default target
    release_date: str = ""
    vm_minutes: tuple[float, float] = (0.0, 0.0)  # what its VMs (install, provisioning, canary) may take: with KVM, under TCG

    @property
    def boots_vms(self) -> bool:
        return self.vm_minutes != (0.0, 0.0)


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


def read(folder: Path, *, base: Path, clouds: tuple[str, ...] = (), variables: dict[str, str] | None = None
         ) -> tuple[list[Entry], list[Skipped]]:
    """Every family manifest of `folder`, validated now so that a broken one fails the generation, not the pipeline;
    in release order within a family (its release date, then its name: w10 before w10-hotfix). A manifest that
    needs a variable only known at run time (--set base_image=...) is skipped, and says so.
    base: where the jobs run (the pipeline file's folder); manifests inside it are named relative to it."""
    script_word("--catalog", str(folder))
    for cloud in clouds:
        script_word("--cloud", cloud)
    paths = sorted(p for p in Path(folder).glob("*.yaml") if not p.name.startswith("_"))
    if not paths:
        raise BakeryError(f"{folder}: no manifests (*.yaml, not starting with _)")
    entries, skipped, seen = [], [], {}
    for path in paths:
        script_word(f"catalog {path.parent}", path.name)  # a job names it: no line break, control character or leading -
        try:
            manifest = load_manifest(path, variables=variables)
        except MissingVariable as missing:
            skipped.append(Skipped(path, f"needs the variable {missing.name!r}, known only at run time: generate with "
                                         f"--set {missing.name}=VALUE (or a CI variable's value) to include it"))
            continue
        slug = re.sub(r"[^a-z0-9-]+", "-", path.stem.lower()).strip("-")
        if slug in seen:
            raise BakeryError(f"{path}: its job name {slug!r} is also {seen[slug]}'s; rename one of them")
        seen[slug] = path.name
        entries.append(Entry(path, script_word(f"catalog {path.parent}", _relative(path, base)), slug,
                             tuple(manifest.family_filter.values()),
                             clouds or tuple(script_word(f"{path}: targets", target.cloud) for target in manifest.targets),
                             manifest.release_date, _vm_minutes(manifest)))
    if not entries:
        raise BakeryError(f"{folder}: no manifest could be generated: " + "; ".join(f"{s.path.name} {s.reason}" for s in skipped))
    return sorted(entries, key=lambda e: (e.release_date, e.path.stem)), skipped


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def _vm_minutes(manifest) -> tuple[float, float]:
    """The longest its VMs may run, from the manifest's own limits: (with KVM, under TCG)."""
    specs = [spec for spec in (manifest.install, manifest.provision, manifest.canary) if spec is not None]
    return (sum(spec.timeout_minutes for spec in specs), sum(spec.timeout_minutes * spec.tcg_timeout_factor for spec in specs))
