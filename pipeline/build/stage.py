"""The build stage: from the manifest's pinned source to the raw image that gets published.

The chain takes an existing disk image (raw or qcow2), or the disk an install from media left. With a
`bake:` section the offline virtio refresh (build/bake) turns it into a raw image with the pinned drivers;
without one it is converted to a sparse raw file when needed. Either way the result is a BuiltImage, and
the source file is only ever read.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pipeline.build.bake import refresh as bake_stage
from pipeline.build.image import BuiltImage, RecordedFacts, discard, origin_sha256
from pipeline.build.inputs import source_label
from pipeline.common.errors import BakeryError
from pipeline.common.progress import say
from pipeline.common.run import run
from pipeline.diskimage.info import GiB, check_qcow2, image_info, qcow2_without_backing
from pipeline.diskimage.safety import CheckedImage, check_image
from pipeline.manifest import Manifest
from pipeline.windows.inspection import inspect_image, refuse_unclean_hives


def build(manifest: Manifest, source_path: Path, workdir: Path, *, virtio_win: Path | None = None) -> BuiltImage:
    """The raw image to publish: baked when the manifest says so, else the source (converted if qcow2).
    With an install or provisioning, `source_path` is that stage's output, not the pinned source."""
    stage = producing_stage(manifest)
    label = input_label(manifest, source_path, stage)
    checked = gate(manifest, source_path, stage)
    origin = origin_sha256(manifest)
    if manifest.bake:
        result = bake_stage.bake(manifest.bake, source_path, virtio_win, workdir, label=label,
                                 max_virtual_size=manifest.max_virtual_gib * GiB)
        return BuiltImage(result.raw, image_info(result.raw, fmt="raw"), source_path, origin, temporary=True,
                          facts=result.facts, baked=result, source_format=checked.format)
    if stage:  # what Setup or the steps left: checked by the facts-based lint rules
        converted = replace(_convert(source_path, workdir, origin), source_format=checked.format)
        try:
            return replace(converted, facts=inspect_image(converted.path, workdir=workdir / "inspect", label=label))
        except BaseException:
            discard(converted)
            raise
    facts = _identity(manifest, checked, label)  # as plan read them: published as it is, the source is the image
    if checked.format == "raw":
        return replace(_as_built(manifest, checked), facts=facts)
    return replace(_convert(source_path, workdir, origin), source_format=checked.format, facts=facts)


def _convert(source_path: Path, workdir: Path, origin: str) -> BuiltImage:
    check_qcow2(source_path)
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / "image.raw"
    partial = workdir / "image.raw.part"
    say(f"convert {source_path.name} (qcow2) to raw")
    try:
        run(["qemu-img", "convert", "-q", "-O", "raw", qcow2_without_backing(source_path), partial], timeout=6 * 3600)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return BuiltImage(target, image_info(target, fmt="raw"), source_path, origin, temporary=True)


def preview(manifest: Manifest, source_path: Path) -> BuiltImage:
    """What build() would hand on, without writing anything (for plan and lint): the gate's view of it, and
    what the source is (identity facts), so plan refuses what the build will refuse."""
    label = input_label(manifest, source_path, None)
    checked = gate(manifest, source_path, None)
    return replace(_as_built(manifest, checked), facts=_identity(manifest, checked, label))


def producing_stage(manifest: Manifest) -> str | None:
    """The stage whose output the build starts from (provision after an install), or None: the pinned source."""
    return "provision" if manifest.provision else "install" if manifest.install else None


def gate(manifest: Manifest, path: Path, stage: str | None) -> CheckedImage:
    """The gate for the disk a stage starts from: the pinned source (stage None), held to its declared format,
    or the disk an earlier stage left (our own qcow2)."""
    declared = manifest.source.format if manifest.source and stage is None else None
    return check_image(path, label=input_label(manifest, path, stage), declared=declared,
                       max_virtual_size=manifest.max_virtual_gib * GiB)


def _as_built(manifest: Manifest, checked: CheckedImage) -> BuiltImage:
    """The source itself as the build's output (a raw source published as it is)."""
    return BuiltImage(checked.path, checked.info, checked.path, origin_sha256(manifest), temporary=False,
                      source_format=checked.format)


def _identity(manifest: Manifest, checked: CheckedImage, label: str) -> RecordedFacts | None:
    """The Windows version, build, architecture and firmware of the source: they need no bake, and the rules
    that check the manifest against them (version-matches-image, architecture-matches-image,
    firmware-matches-disk) should fail in plan, not hours later. A source published without a bake is the
    image itself, so its drivers are known too and device-needs-driver judges them in plan and lint. A source the bake will refuse is refused
    here with the same error; a source published as it is and not readable as Windows is published
    without them (a note says so)."""
    try:
        facts = inspect_image(checked.path, label=label, checked=checked)  # gated once, with the manifest's limits
        if manifest.bake:
            refuse_unclean_hives(label, facts.hives)
    except BakeryError as exc:
        if manifest.bake:
            raise
        say(f"{label}: not read as a Windows image, so the rules that need its facts are skipped ({exc.one_line()})")
        return None
    if manifest.bake:  # the bake changes drivers, agent and first boot: only what it keeps is known now
        return RecordedFacts(facts.identity(), facts.identity_lint_facts())
    return RecordedFacts(facts.to_dict(), facts.lint_facts())  # published as it is: its boot drivers are the instances'



def input_label(manifest: Manifest, source_path: Path, stage: str | None) -> str:
    """A source is known by its manifest field; the disk a stage left, by that stage."""
    if stage == "provision":
        return f"{manifest.path}: provision (the disk the steps left, {source_path.name})"
    if stage == "install":
        return f"{manifest.path}: install (the disk Setup left, {source_path.name})"
    return source_label(manifest)
