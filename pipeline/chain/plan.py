"""`invoke plan`: what build-and-publish would do, per target, writing to no cloud."""

from __future__ import annotations

from pipeline import canary
from pipeline.chain.options import JobOptions
from pipeline.chain.prepare import Prepared, prepare
from pipeline.chain.targets import Destination, connect_destinations, first_target
from pipeline.common.progress import say
from pipeline.common.report import Report
from pipeline.glance.connect import Target
from pipeline.manifest import Manifest
from pipeline.publish import methods, release
from pipeline.publish import upload as publish


def plan(options: JobOptions, report: Report, *, target: Target | None = None) -> Report:
    """The dry run: what build-and-publish would do, per target, changing nothing in Glance."""
    prepared = prepare(options, report, convert=False)
    manifest = prepared.manifest
    with report.stage("connect"):
        destinations = connect_destinations(manifest, options, target)
    report.target = first_target(destinations)
    image = prepared.image
    if image.path is None:  # installed from media: the disk exists only after the install
        upload = {"path": None, "installed_from": str(image.source_path)}
        upload_summary = f"the disk installed from {image.source_path.name}"
    else:
        upload = {"path": str(image.path), "size": image.path.stat().st_size, "virtual_size": image.info.virtual_size,
                  "source_format": image.source_format or image.info.format, "cache_entry": image.cache_entry}
        upload_summary = f"{image.path} ({image.path.stat().st_size:,} bytes)"
    targets = [_plan_target(d, prepared, options) for d in destinations]
    first = targets[0]
    report.demoted = first["would_demote_releases"]
    report.plan = {
        "name": manifest.name,
        "properties": prepared.propset.all(),
        "visibility": first["visibility"],
        "warnings": first["warnings"],
        "upload": upload,
        "route": first["route"],
        "existing_with_same_build_id": first["existing_with_same_build_id"],
        "would_demote": first["would_demote"],
        "targets": targets,
        "summary": {
            "would publish": manifest.name,
            **{f"to {t['name']}": _target_summary(t, upload_summary) for t in targets},
        },
    }
    _plan_guest_stages(manifest, prepared.propset.properties, report.plan)
    report.ok = True
    return report


def _plan_guest_stages(manifest: Manifest, properties: dict[str, str], planned: dict) -> None:
    """What would run inside a guest: the provisioning steps, and the machine the canary would boot."""
    if manifest.provision:
        steps = [f"{step.name} ({step.kind})" for step in manifest.provision.steps]
        planned["provision"] = manifest.provision.to_dict()
        planned["summary"]["would provision"] = f"{', '.join(steps)}; at most {manifest.provision.max_reboots} reboot(s)"
    if manifest.canary:
        hardware = canary.plan(manifest, properties)
        planned["canary"] = {**hardware.to_dict(), "domain_xml": hardware.domain_xml}
        planned["summary"]["would boot first (canary)"] = hardware.summary + (f" ({hardware.not_applied})" if hardware.not_applied else "")


def _plan_target(destination: Destination, prepared: Prepared, options: JobOptions) -> dict:
    target, manifest = destination.target, prepared.manifest
    if target is None:
        return {"name": destination.name, "error": destination.error, "visibility": None, "warnings": [], "route": None,
                "existing_with_same_build_id": [], "would_demote": [], "would_demote_releases": []}
    visibility = destination.visibility or manifest.visibility
    existing = publish.find_verified(target, prepared.build_id)
    previous = release.to_supersede(target, manifest, new_id=None, allow_older=options.allow_older)
    chosen = methods.route(target, destination.spec.upload or manifest.upload, probe=False)  # a plan writes to no cloud
    warnings = _permission_warnings(target, visibility)
    for warning in warnings:
        say(f"warning: {target.name}: {warning}")
    return {"name": target.name, "visibility": visibility, "warnings": warnings, "route": chosen.to_dict(),
            "existing_with_same_build_id": [e["id"] for e in existing], "would_demote": [p.id for p in previous],
            "would_demote_releases": [p.to_dict() for p in previous]}


def _target_summary(planned: dict, upload_summary: str) -> str:
    if planned.get("error"):
        return f"cannot be reached: {planned['error']}"
    route = planned["route"]
    stores = "all stores" if route["all_stores"] else (", ".join(route["stores"]) or "the default store")
    how = f"{route['method']} ({route['stage_format']}) to {stores}: {route['why']}"
    upload = "maybe nothing: an image with this build id exists" if planned["existing_with_same_build_id"] else upload_summary
    demote = ", ".join(planned["would_demote"]) or "nothing"
    warned = " (see warnings)" if planned["warnings"] else ""
    return f"{planned['visibility']}{warned}; {how}; upload {upload}; would demote {demote}"


def _permission_warnings(target: Target, visibility: str) -> list[str]:
    """What Glance's default policy will refuse this account (build-and-publish checks it for real, before
    uploading; plan only knows the account's roles)."""
    if visibility == "public" and "admin" not in target.roles:
        return [f"visibility public needs Glance's publicize_image permission (admin by default); this account has roles "
                f"{', '.join(target.roles) or 'none'}: build-and-publish will stop before uploading unless the cloud allows it "
                f"(or set image.visibility to community or shared)"]
    return []
