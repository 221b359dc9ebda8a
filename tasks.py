"""Invoke tasks: parse arguments, call pipeline/. No logic lives here.

    invoke build-and-publish --manifest manifests/w10entx64.yaml [--cloud NAME] [--json report.json] [--no-cache]
    invoke bake --manifest manifests/w10entx64.yaml --out DIR  then  invoke publish --artifact DIR [--cloud NAME]
    invoke lock --manifest manifests/w10entx64.yaml [--release-date D]      (writes manifests/w10entx64.lock)
    invoke rebuild --image ID | --lock FILE
    invoke cache-ls | cache-gc [--max-gib N] [--all]
    invoke plan --manifest manifests/w10entx64.yaml       (changes nothing anywhere)
    invoke probe [--cloud NAME]                 (learn whether a cloud converts a staged qcow2: plan only reads it)
    invoke lifecycle --manifest manifests/w10entx64.yaml [--apply]   (hide / deactivate / delete past releases)
    invoke audit [--repair] [--standard scs-0102]
    invoke inspect IMAGE                       (a disk image file or a Glance image id)
    invoke synthetic --windows w10 --out base.raw [--virtio-win-iso virtio.iso]
    invoke glance-up | glance-down | glance-status
    invoke cloud-up [--consumers] | cloud-down | cloud-status  (Keystone + a Keystone-authenticated Glance [+ Nova, Cinder APIs], and a clouds.yaml)
    invoke release-notes --artifact DIR | --image ID [--previous-artifact DIR] [--cloud NAME] [--out release-notes/]
    invoke ci --engine gitlab --catalog manifests/ [--cloud NAME] [--out .gitlab-ci.yml]
    invoke demo
"""

from __future__ import annotations

import datetime as dt
import json as jsonlib  # `json` is the name of the report option
from pathlib import Path

from invoke import task

from pipeline import chain
from pipeline import synthetic as synthetic_stage
from pipeline.ci import gitlab
from pipeline.cli import execute, print_audit, print_cache, print_findings, print_inspection, print_lifecycle
from pipeline.common.errors import BakeryError
from pipeline.common.paths import state_dir
from pipeline.common.progress import say
from pipeline.common.settings import exactly_one
from pipeline.glance.connect import connect
from pipeline.glance.local import LocalGlance
from pipeline.glance.localcloud import DEFAULT_TOKEN_LIFETIME, LocalCloud, consumer_ports, token_seconds
from pipeline.properties import explain as explain_stage
from pipeline.publish import audit as audit_stage
from pipeline.publish import methods
from pipeline.repro import cache as cache_stage
from pipeline.repro import rebuild as rebuild_stage
from pipeline.synthetic import virtio_iso, windows_disk

COMMON_HELP = {
    "manifest": "the family's manifest, e.g. manifests/w10entx64.yaml",
    "cloud": "a cloud from clouds.yaml (default: OS_CLOUD / OS_* variables, else the local Glance)",
    "release-date": "ISO date of this release (default: today, UTC)",
    "set": "a manifest variable, KEY=VALUE (repeatable)",
    "json": "also write a machine-readable report to this file",
    "allow-older": "publish even if the family recommends a newer release (it gets demoted)",
}


def _help(*names: str) -> dict[str, str]:
    return {name: COMMON_HELP[name] for name in names}


def _options(manifest, cloud, release_date, set, allow_older=False, no_cache=False, lock=None) -> chain.JobOptions:
    clouds = tuple(cloud) if isinstance(cloud, (list, tuple)) else ((cloud,) if cloud else ())
    return chain.JobOptions(Path(manifest), clouds=clouds, release_date=release_date, variables=tuple(set or ()),
                            allow_older=allow_older, use_cache=not no_cache, lock=Path(lock) if lock else None)


PUBLISH_HELP = {**COMMON_HELP, "cloud": "a cloud from clouds.yaml; repeat it to publish to several (default: the manifest's "
                                        "targets, else OS_CLOUD / OS_* variables, else the local Glance)"}


@task(iterable=["set", "cloud"], help={**PUBLISH_HELP, "no-cache": "build every stage again, without reading or filling the stage cache",
                              "lock": "the lock file to verify against (default: the manifest's .lock, when it exists)"})
def build_and_publish(c, manifest, cloud=None, release_date=None, set=None, json=None, allow_older=False, no_cache=False, lock=None):
    """Build the image of a manifest, publish it verified to Glance, demote the previous release."""
    options = _options(manifest, cloud, release_date, set, allow_older, no_cache, lock)
    execute("build-and-publish", json, lambda report: chain.build_and_publish(options, report))


@task(iterable=["set"], help={**_help("manifest", "release-date", "set", "json"), "out": "a new or empty directory for the artifact",
                              "no-cache": "build every stage again, without reading or filling the stage cache",
                              "lock": "the lock file to verify against (default: the manifest's .lock, when it exists)",
                              "handoff": "artifact (the image in --out) or cache (the image stays in the shared stage cache "
                                         "BAKERY_CACHE_DIR, --out holds only its record: what CI jobs pass on)"})
def bake(c, manifest, out, release_date=None, set=None, json=None, no_cache=False, lock=None, handoff="artifact"):
    """Build and measure a manifest's image and write it with its record as an artifact (no Glance): a CI bake job."""
    options = _options(manifest, None, release_date, set, no_cache=no_cache, lock=lock)
    execute("bake", json, lambda report: chain.bake(options, report, out=Path(out), handoff=handoff))


@task(iterable=["cloud"], help={"artifact": "the directory `invoke bake --out` wrote", **_help("json", "allow-older"),
                                "cloud": PUBLISH_HELP["cloud"]})
def publish(c, artifact, cloud=None, json=None, allow_older=False):
    """Publish a baked artifact: upload (measured against its record in the same pass), verify, release."""
    options = _options(Path(artifact) / "record.json", cloud, None, None, allow_older)  # the manifest is the record's
    execute("publish", json, lambda report: chain.publish_artifact(options, report, artifact_dir=Path(artifact)))


@task(help={"artifact": "the release, as the directory `invoke bake --out` wrote", "image": "the release, as a Glance image id",
            "previous_artifact": "the previous release's artifact (default: the family's previous release in the cloud)",
            "out": "the folder of release notes and family pages (default: release-notes/)",
            "no_download": "never download an image to read its SBOM (a release with no recorded SBOM has no component list)",
            **_help("cloud", "json")})
def release_notes(c, artifact=None, image=None, previous_artifact=None, cloud=None, out="release-notes", json=None, no_download=False):
    """Release notes (Markdown, HTML) of a release against the family's previous one, and the family's page."""
    execute("release-notes", json, lambda report: chain.release_notes(
        report, out=Path(out), artifact_dir=Path(artifact) if artifact else None, image_id=image,
        previous_artifact=Path(previous_artifact) if previous_artifact else None, cloud=cloud, download=not no_download),
        summary=False)


@task(iterable=["cloud", "tag", "set", "setup", "fuse_tag", "kvm_tag"],
      help={"engine": "gitlab", "catalog": "the folder of manifests (default: manifests/)",
            "set": "a manifest variable KEY=VALUE for every manifest and job (repeatable)",
            "setup": "a command every job runs first (repeatable; default: make deps, which needs root; `make venv` needs none "
                     "where the runner image has the Debian packages)",
            "cloud": "publish to this cloud (repeatable; default: each manifest's targets)",
            "tag": "a runner tag for every job (repeatable)", "fuse-tag": "a tag of runners that may mount FUSE: bake jobs (repeatable)",
            "kvm-tag": "a tag of runners with /dev/kvm: bake jobs that boot a VM (repeatable; none: TCG, which must fit the limit)",
            "max-job-minutes": f"the longest job timeout the runners allow (default {gitlab.DEFAULT_MAX_JOB_MINUTES})",
            "cache-dir": "BAKERY_CACHE_DIR on the runners: the shared stage cache bake jobs leave images in (required)",
            "invoke": "how jobs run the bakery (default: .venv/bin/invoke)",
            "out": "write the pipeline here (default: print it)", **_help("json")})
def ci(c, engine="gitlab", catalog="manifests", cloud=None, tag=None, set=None, setup=None, cache_dir=None, invoke=".venv/bin/invoke",
       out=None, json=None, fuse_tag=None, kvm_tag=None, max_job_minutes=None):
    """Generate the CI pipeline of a catalog: lint, a bake job per manifest, a publish job per manifest and cloud."""
    def options() -> gitlab.Options:  # checked inside execute: a refused option is one line, like any error
        return gitlab.Options(invoke=invoke, tags=tuple(tag or ()), cache_dir=cache_dir, variables=tuple(set or ()),
                              fuse_tags=tuple(fuse_tag or ()), kvm_tags=tuple(kvm_tag or ()), max_job_minutes=gitlab.job_minutes(max_job_minutes),
                              **({"setup": tuple(setup)} if setup else {}))

    report = execute("ci", json, lambda report: chain.generate_ci(report, engine=engine, catalog=Path(catalog), clouds=tuple(cloud or ()),
                                                                 options=options(), out=Path(out) if out else None), summary=False)
    if not out:
        print(report.details["ci"]["text"], end="")


@task(iterable=["set"], help={**_help("manifest", "release-date", "set", "json"), "out": "where to write it (default: next to the manifest, .lock)"})
def lock(c, manifest, release_date=None, set=None, json=None, out=None):
    """Pin every input of a release (files, elements, templates, tools) in a lock file to review in git."""
    options = _options(manifest, None, release_date, set, lock=out)
    execute("lock", json, lambda report: chain.write_lock(options, report), summary=False)


@task(help={"image": "a Glance image id: rebuild from the lock its provenance names", "lock": "rebuild from this lock file",
            **_help("cloud", "json")})
def rebuild(c, image=None, lock=None, cloud=None, json=None):
    """Rebuild a release from its lock, without the cache, and compare it with what was published."""
    execute("rebuild", json, lambda report: rebuild_stage.rebuild(report, image_id=image, lock_file=lock, cloud=cloud), summary=False)


@task(help=_help("json"))
def cache_ls(c, json=None):
    """List the stage cache: stage, id, size on disk, last use."""
    report = execute("cache-ls", json, cache_stage.list_entries, summary=False)
    print_cache(report)


@task(help={"max_gib": "evict least recently used entries until the cache fits (default: BAKERY_CACHE_MAX_GIB or 100)",
            "all": "empty the cache", **_help("json")})
def cache_gc(c, max_gib=None, all=False, json=None):
    """Evict least recently used stage outputs beyond the size limit (and any broken entry)."""
    def collect(report):
        limit = 0 if all else (None if max_gib is None else cache_stage.gib_limit(max_gib, "--max-gib"))
        return cache_stage.collect(report, limit=limit)

    report = execute("cache-gc", json, collect, summary=False)
    print_cache(report)


@task(iterable=["set", "cloud"], help=PUBLISH_HELP)
def plan(c, manifest, cloud=None, release_date=None, set=None, json=None, allow_older=False):
    """Dry run: the properties, the target, what would be uploaded and demoted. Changes nothing."""
    options = _options(manifest, cloud, release_date, set, allow_older)
    execute("plan", json, lambda report: chain.plan(options, report))


@task(iterable=["set"], help={**_help("manifest", "release-date", "set", "json", "cloud"),
                              "image": "lint a Glance image by id instead (its bytes are downloaded and inspected)",
                              "properties_only": "with --image: check the properties only, do not download the image"})
def lint(c, manifest=None, image=None, cloud=None, release_date=None, set=None, json=None, properties_only=False):
    """Check a manifest's rendered property set, or a Glance image's properties and bytes; exits 1 on errors."""
    def action(report):
        if exactly_one("lint", manifest=manifest, image=image) == "image":
            return chain.lint_glance(connect(cloud), image, report, inspect=not properties_only, workdir=state_dir() / "inspect")
        return chain.lint_manifest(_options(manifest, None, release_date, set), report)

    report = execute("lint", json, action, summary=False, on_error=print_findings)
    print_findings(report)
    if "properties" in report.details:
        print(jsonlib.dumps(report.details["properties"], indent=2, sort_keys=True))


@task(iterable=["set"], help={**_help("manifest", "release-date", "set", "json", "cloud"), "image": "a Glance image id instead",
                              "nova": "Nova release: pike, zed, 2024.1, ... (default: master)"})
def explain(c, manifest=None, image=None, cloud=None, nova="master", release_date=None, set=None, json=None):
    """Print the libvirt XML Nova would generate for these properties (Hyper-V, clock, firmware, devices)."""
    def action(report):
        if exactly_one("explain", manifest=manifest, image=image) == "image":
            return explain_stage.explain_image(connect(cloud), image, report, nova=nova)
        return chain.explain_manifest(_options(manifest, None, release_date, set), report, nova=nova)

    report = execute("explain", json, action, summary=False)
    shown = report.details["explain"]
    print(shown["xml"])
    say(f"Nova {shown['nova']} ({shown['version']}): Hyper-V enlightenments: "
        f"{', '.join(shown['enlightenments']) or 'NONE (os_type is not exactly windows)'}")
    for limitation in shown["limitations"]:
        say(f"known limitation: {limitation}")
    for key, value in shown["recommended_additions"].items():
        say(f"a recommended Windows set would add: {key}={value}")


@task(help={"image": "a raw/qcow2 disk image file, or a Glance image id", **_help("cloud", "json")})
def inspect(c, image, cloud=None, json=None):
    """What a Windows image is and which virtio drivers it carries, read offline from its registry."""
    report = execute("inspect", json, lambda report: chain.inspect_reference(image, report, cloud=cloud, workdir=state_dir() / "inspect"),
                     summary=False)
    print_inspection(report)


@task(help={"windows": f"one of: {', '.join(windows_disk.RELEASES)}", "out": "where to write the disk image",
            "format": "raw or qcow2", "size_gib": f"virtual size in GiB (default {synthetic_stage.DEFAULT_SIZE_GIB})", "virtio_win_iso": "also write a synthetic virtio-win ISO here",
            "virtio_win_version": f"its release: {', '.join(virtio_iso.RELEASES)}", "json": COMMON_HELP["json"]})
def synthetic(c, windows, out, format="raw", size_gib=None, virtio_win_iso=None, virtio_win_version="0.1.240", json=None):
    """Generate a SYNTHETIC, format-real Windows disk (and virtio-win ISO) to try the bake without real media."""
    execute("synthetic", json, lambda report: synthetic_stage.generate(
        report, windows=windows, out=Path(out), fmt=format, size_gib=size_gib,
        iso=Path(virtio_win_iso) if virtio_win_iso else None, iso_version=virtio_win_version), summary=False)


@task(help={**_help("cloud", "json"), "repair": "converge the project's families (one recommended, the newest) and delete "
                                                  "abandoned uploads",
            "standard": "also check every visible image against a metadata standard: scs-0102"})
def audit(c, cloud=None, json=None, repair=False, standard=None):
    """Lint every Windows-looking image of the target Glance, report family health and unfinished uploads."""
    report = execute("audit", json, lambda report: audit_stage.audit(connect(cloud), report, repair=repair, standard=standard),
                     summary=False, on_error=print_audit)
    print_audit(report)


@task(iterable=["set", "cloud"], help={**_help("manifest", "set", "json"), "cloud": PUBLISH_HELP["cloud"],
                                      "apply": "carry the plan out (without it, nothing is changed)",
                                      "today": "the day ages are counted to (default: today, UTC)",
                                      "family_owner": "the project that owns the family's images (default: yours); an admin "
                                                      "retiring images a member published names the member's project",
                                      "usage_cloud": "a second clouds.yaml entry used only to list servers and volumes "
                                                     "(one that may see every project), so in-use is known for shared images"})
def lifecycle(c, manifest, cloud=None, set=None, json=None, apply=False, today=None, family_owner=None, usage_cloud=None):
    """Plan (and with --apply, carry out) what the manifest's release.lifecycle asks for each past release."""
    options = _options(manifest, cloud, None, set)
    report = execute("lifecycle", json, lambda report: chain.lifecycle(options, report, apply=apply, today=today,
                                                                       family_owner=family_owner, usage_cloud=usage_cloud),
                     summary=False, on_error=print_lifecycle)
    print_lifecycle(report)


@task(help=_help("cloud", "json"))
def probe(c, cloud=None, json=None):
    """Learn whether the cloud converts a staged qcow2 on import (writes a 1 MiB probe image, then deletes it)."""
    execute("probe", json, lambda report: methods.probe(connect(cloud), report), summary=False)


@task(iterable=["store"], help={"image": "the Glance image id", "store": "a store to copy it into (repeatable)", **_help("cloud", "json")})
def copy_image(c, image, store=None, cloud=None, json=None):
    """Copy a published image into more stores of its cloud (copy-image import), and prove it unchanged."""
    execute("copy-image", json, lambda report: methods.copy_to_stores(connect(cloud), image, tuple(store or ()), report),
            summary=False)


@task(help=_help("json"))
def glance_up(c, json=None):
    """Start the local Glance on 127.0.0.1 (sqlite + file store) unless it is already up."""
    execute("glance-up", json, lambda report: _glance_report(report, LocalGlance().up()), summary=False)


@task(help=_help("json"))
def glance_down(c, json=None):
    """Stop the local Glance; its images and database are kept."""
    execute("glance-down", json, lambda report: _glance_report(report, LocalGlance().down()), summary=False)


@task(help=_help("json"))
def glance_status(c, json=None):
    """Say whether the local Glance runs and answers; exits 1 when it does not."""
    execute("glance-status", json, lambda report: _glance_report(report, LocalGlance().status(), require_healthy=True), summary=False)


@task(help={"token_lifetime": f"Keystone's token lifetime in seconds (default {DEFAULT_TOKEN_LIFETIME})", **_help("json"),
            "consumers": "also run the Nova and Cinder APIs, for the lifecycle's in-use checks",
            "nova-port": "Nova's API port with --consumers (default: BAKERY_CLOUD_NOVA_PORT, else 18774)",
            "cinder-port": "Cinder's API port with --consumers (default: BAKERY_CLOUD_CINDER_PORT, else 18776)",
            "production-shaped": "Keystone and a Glance of several workers on a private MariaDB (needs mariadb-server)",
            "mariadb-port": "MariaDB's port with --production-shaped (default: BAKERY_CLOUD_MARIADB_PORT, else 13306)"})
def cloud_up(c, token_lifetime=None, json=None, consumers=False, nova_port=None, cinder_port=None, production_shaped=False,
             mariadb_port=None):
    """Start a real Keystone + Keystone-authenticated Glance on 127.0.0.1 and write its clouds.yaml."""
    def up(report):
        ports = consumer_ports(nova_port, cinder_port) if consumers else None
        cloud = LocalCloud(token_lifetime=token_seconds(token_lifetime), consumer_ports=ports,
                           production_shaped=production_shaped or None, mariadb_port=mariadb_port)
        return _glance_report(report, cloud.up())

    execute("cloud-up", json, up, summary=False)


@task(help=_help("json"))
def cloud_down(c, json=None):
    """Stop the local cloud (Keystone and its Glance); their data is kept."""
    execute("cloud-down", json, lambda report: _glance_report(report, LocalCloud().down()), summary=False)


@task(help=_help("json"))
def cloud_status(c, json=None):
    """Say whether the local cloud runs and answers, and where its clouds.yaml is; exits 1 when it does not."""
    execute("cloud-status", json, lambda report: _glance_report(report, LocalCloud().status(), require_healthy=True), summary=False)


def _glance_report(report, status, require_healthy=False):
    report.details["cloud" if hasattr(status, "keystone") else "glance"] = status.to_dict()
    say(status.message)
    if require_healthy and not status.healthy:
        raise BakeryError(status.message)
    report.ok = True


@task(help=_help("json"))
def demo(c, json=None):
    """The main job on the embedded default: two monthly releases of a synthetic image, the first demoted."""
    from pipeline.demo import run_demo

    today = dt.date.today()
    last_month = (today.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
    months = (last_month.isoformat(), today.replace(day=1).isoformat())
    report = execute("demo", json, lambda report: run_demo(report, months=months))
    say("the family now:")
    for member in report.details["family"]:
        say(f"  {member['release_date']}  recommended={member['recommended']:<5}  {member['name']}  {member['id']}")
    say(f"release notes: {report.details['release_notes']['folder']}/notes.html")
    say(f"the family's page: {report.details['release_notes']['family_page']} (open it in a browser)")
    say("the local Glance keeps running: `invoke glance-status`, `invoke glance-down`")

