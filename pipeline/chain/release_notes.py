"""`invoke release-notes`: what is in a release and what changed since the family's previous one, as Markdown
and HTML, with the canary's picture of the boot; and the family's static page.

The release is an artifact (`--artifact`, from `invoke bake`) or a Glance image (`--image`); the previous one
is another artifact (`--previous-artifact`) or, with a cloud, the family's newest release older than this one.
A release's SBOM comes from its artifact, else from this machine's SBOM store by the image's
bakery_sbom_sha256, else it is read again from the image's bytes (downloaded; slow for a large image, and
said in the notes).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.chain.inspecting import downloaded
from pipeline.common.errors import BakeryError
from pipeline.common.paths import state_dir
from pipeline.common.progress import say
from pipeline.common.report import Report
from pipeline.glance.connect import Target, connect
from pipeline.glance.images import STATE_KEY, custom_properties, fetch_image, list_including_hidden
from pipeline.manifest import Manifest
from pipeline.notes import Canary, FamilyEntry, ReleaseNotes, ReleaseSide, write_family_page, write_notes
from pipeline.notes.family import local_entries
from pipeline.publish.lease import LEASE_KEY, UPLOADER_KEY
from pipeline.publish.release import WITHDRAWN_KEY, release_order
from pipeline.repro import artifact
from pipeline.repro.bom import kept_boot, read_image_sbom, stored
from pipeline.sbom import load_sbom
from pipeline.sbom.document import PROPERTY as SBOM_PROPERTY

# Glance's own fields a release engineer decides on, compared with the properties (the record keeps them as "core").
COMPARED_FIELDS = ("min_disk", "min_ram", "disk_format", "container_format")
# Where a release stands in its family (set by the release step and the lifecycle), not what it is: the family
# page shows it; the notes compare what was built.
RELEASE_STATE = frozenset({"recommended", "superseded_by", "supersedes", STATE_KEY, WITHDRAWN_KEY, UPLOADER_KEY, LEASE_KEY})
FAMILY_KEYS = ("os_distro", "os_distro_major", "os_edition", "architecture")  # the default family, for --image


def release_notes(report: Report, *, out: Path, artifact_dir: Path | None = None, image_id: str | None = None,
                  previous_artifact: Path | None = None, cloud: str | None = None, target: Target | None = None,
                  download: bool = True) -> Report:
    """The cloud (`cloud`, or the default one) is asked unless two artifacts say everything: `--previous-artifact`
    without `--cloud`."""
    if (artifact_dir is None) == (image_id is None):
        raise BakeryError("release-notes: give the release as --artifact DIR or as --image ID (with --cloud)")
    if target is None and (cloud or image_id or not previous_artifact):
        target = connect(cloud)
    workdir = state_dir() / "work"
    if artifact_dir:
        baked = artifact.load(artifact_dir)
        manifest = baked.manifest()
        family, keys = _family_name(manifest.family_filter), manifest.family_filter
        new = _from_artifact(baked)
        canary = _artifact_canary(baked)
        if target:  # the same build, published: its image id and the state the family page shows
            published = [i for i in _family_images(target, keys) if i.get("bakery_build_id") == baked.build_id]
            if published:
                new = dataclasses.replace(new, image_id=str(published[0]["id"]))
    else:
        image = fetch_image(target, image_id)
        keys = {k: str(image[k]) for k in FAMILY_KEYS if image.get(k)}
        family = _family_name(keys)
        new = _from_cloud(target, image, workdir, download=download)
        picture, verdict, machine = kept_boot(image.get("bakery_build_id"))
        canary = Canary(image.get("bakery_canary"), machine, picture if verdict == image.get("bakery_canary") else None) \
            if image.get("bakery_canary") else None
    notes = []
    if previous_artifact:
        previous = _from_artifact(artifact.load(previous_artifact))
    elif target:
        previous = _previous_in_cloud(target, keys, new, workdir, download=download)
    else:
        previous = None
        notes.append("compared with no previous release: give --previous-artifact or --cloud")
    for side, which in ((new, "this release"), (previous, "the previous release")):
        if side and side.sbom_source == "read again from the image's bytes":
            notes.append(f"the SBOM of {which} was read again from its bytes (no recorded SBOM on this machine): "
                         "its components are the image's, its build inputs unknown")
    result = ReleaseNotes(family=family, new=new, previous=previous, canary=canary, notes=notes)
    folder = write_notes(result, out)
    page = write_family_page(out, family, _family_entries(target, keys, out / folder.parent.name))
    say(f"release notes: {folder / 'notes.md'} and notes.html; family page {page}")
    report.details["release_notes"] = {**result.to_dict(), "folder": str(folder), "family_page": str(page)}
    report.ok = True
    return report


def _family_name(keys: dict[str, str]) -> str:
    return keys.get("os_distro_major") or "/".join(keys.values()) or "unnamed family"


def _from_artifact(baked: artifact.Artifact) -> ReleaseSide:
    sbom = baked.sbom()
    manifest: Manifest = baked.manifest()
    core = baked.record["core"]
    return ReleaseSide(name=manifest.name, release_date=manifest.release_date,
                       properties={**{k: v for k, v in baked.record["properties"].items() if k not in RELEASE_STATE},
                                   **{k: str(core[k]) for k in COMPARED_FIELDS if k in core}},
                       size=baked.measurement.size, virtual_size=baked.record["image"].get("virtual_size"),
                       sbom=sbom, sbom_source="artifact" if sbom else "none")


def _artifact_canary(baked: artifact.Artifact) -> Canary | None:
    recorded = baked.record.get("canary")
    verdict = baked.record["properties"].get("bakery_canary")
    if not recorded and not verdict:
        return None
    return Canary(verdict, (recorded or {}).get("machine", ""), baked.boot_picture)


def _from_cloud(target: Target, image: dict, workdir: Path, *, download: bool) -> ReleaseSide:
    properties = {**{k: str(v) for k, v in custom_properties(image).items() if k not in RELEASE_STATE},
                  **{k: str(image[k]) for k in COMPARED_FIELDS if image.get(k) is not None}}
    name, release_date = str(image.get("name") or image["id"]), str(image.get("release_date") or "")
    recorded = properties.get(SBOM_PROPERTY)
    sbom, source = None, "none"
    if (path := stored(recorded)) is not None:
        sbom, source = load_sbom(path, expected_sha256=recorded), "local store"
    elif download and image.get("status") == "active":
        say(f"release notes: no recorded SBOM of {name} on this machine: reading it from the image's bytes")
        with downloaded(target, image, workdir) as local:
            try:
                sbom = read_image_sbom(local, name=name, release_date=release_date or "1970-01-01",
                                       build_id=properties.get("bakery_build_id", ""), build_stage=properties.get("bakery_build_stage", ""),
                                       workdir=workdir)
                source = "read again from the image's bytes"
            except BakeryError as exc:
                say(f"release notes: {name}: no SBOM ({exc.one_line()})")
    return ReleaseSide(name=name, release_date=release_date, properties=properties, size=image.get("size"),
                       virtual_size=image.get("virtual_size"), image_id=str(image["id"]), sbom=sbom, sbom_source=source)


def _family_images(target: Target, keys: dict[str, str]) -> list[dict]:
    """The family's images in the caller's project, hidden and deactivated ones included, oldest first."""
    found = {i["id"]: i for i in list_including_hidden(target, keys) if i.get("owner") == target.project_id}
    return sorted(found.values(), key=release_order)


def _previous_in_cloud(target: Target, keys: dict[str, str], new: ReleaseSide, workdir: Path, *, download: bool) -> ReleaseSide | None:
    """The family's newest active release before this one, never this release itself: in the family's release
    order when this release is in the cloud, else by release date (one of the same date counts as before it)."""
    images = _family_images(target, keys)
    mine = next((i for i in images if i["id"] == new.image_id), None)
    candidates = [i for i in images if i.get("status") == "active" and i["id"] != new.image_id
                  and (new.build_id is None or i.get("bakery_build_id") != new.build_id)
                  and (release_order(i) < release_order(mine) if mine else str(i.get("release_date") or "") <= new.release_date)]
    return _from_cloud(target, candidates[-1], workdir, download=download) if candidates else None


def _family_entries(target: Target | None, keys: dict[str, str], family_dir: Path) -> list[FamilyEntry]:
    """Every release the cloud has of the family, with its notes and picture where this folder has them; and the
    notes of releases the cloud does not have (any more)."""
    local = local_entries(family_dir)
    entries = []
    for image in _family_images(target, keys) if target else []:
        kept = local.pop(str(image.get("bakery_build_id")), None)
        entries.append(FamilyEntry(
            name=str(image.get("name") or image["id"]), release_date=str(image.get("release_date") or ""), state=_state(image),
            image_id=str(image["id"]), windows=kept.windows if kept else str(image.get("bakery_windows_product") or ""),
            verdict=str(image["bakery_canary"]) if image.get("bakery_canary") else None,
            notes=kept.notes if kept else None, picture=kept.picture if kept else None))
    return entries + list(local.values())


def _state(image: dict) -> str:
    if image.get("status") != "active":
        return str(image.get("status"))
    if image.get("recommended") == "true":
        return "recommended"
    return "hidden" if image.get("os_hidden") else "superseded" if image.get("superseded_by") else "not recommended"
