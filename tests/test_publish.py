"""The chain against a real Glance: publish, verify, demote, idempotence, dry run."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from pipeline import chain
from pipeline.common.errors import BakeryError, ManifestError
from pipeline.common.report import Report
from pipeline.glance.connect import connect_local
from pipeline.glance.images import GLANCE_FIELDS
from tests.conftest import MiB, make_image, project_images, write_manifest


def publish(target, manifest, release_date, **options):
    report = Report("build-and-publish")
    chain.build_and_publish(chain.JobOptions(manifest, release_date=release_date, **options), report, target=target)
    return report


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "base.raw"
    return path, make_image(path, 6 * MiB, seed="base", sparse_tail=2 * MiB)


def test_publish_stores_exactly_the_rendered_properties(target, tmp_path, source):
    image_path, sha256 = source
    manifest = write_manifest(tmp_path, image_path, sha256)
    plan = Report("plan")
    chain.plan(chain.JobOptions(manifest, release_date="2026-10-01"), plan, target=target)

    report = publish(target, manifest, "2026-10-01")

    stored = target.glance.images.get(report.image["id"])
    rendered = dict(plan.plan["properties"])
    core = {key: rendered.pop(key) for key in ("disk_format", "container_format", "min_disk", "min_ram")}
    assert {k: v for k, v in stored.items() if k not in GLANCE_FIELDS} == rendered
    assert {k: str(stored[k]) for k in core} == core
    data = image_path.read_bytes()

    assert stored["checksum"] == hashlib.md5(data).hexdigest() == report.image["checksum"]
    assert stored["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert stored["size"] == len(data) == 8 * MiB
    assert stored["status"] == "active" and stored["os_hidden"] is False
    assert stored["visibility"] == "private" and stored["owner"] == target.project_id
    assert "bakery_state" not in stored
    assert report.ok and report.image["uploaded"] is True


def test_second_release_demotes_the_first_and_leaves_other_families_alone(target, tmp_path, source):
    image_path, sha256 = source
    desktop = write_manifest(tmp_path, image_path, sha256)
    server = write_manifest(tmp_path, image_path, sha256, name="server.yaml",
                            family={"os_distro_major": "w2022stdx64", "os_edition": "SERVER"})
    first = publish(target, desktop, "2026-10-01").image["id"]
    other = publish(target, server, "2026-10-01").image["id"]
    second_report = publish(target, desktop, "2026-11-01")
    second = second_report.image["id"]

    old, new, untouched = (target.glance.images.get(i) for i in (first, second, other))
    assert old["recommended"] == "false" and old["superseded_by"] == second
    assert new["recommended"] == "true" and new["supersedes"] == first
    assert untouched["recommended"] == "true" and "superseded_by" not in untouched
    assert [d["id"] for d in second_report.demoted] == [first]
    recommended = [i for i in project_images(target) if i.get("recommended") == "true" and i.get("os_edition") == "DESKTOP"]
    assert [i["id"] for i in recommended] == [second]


def test_other_projects_releases_are_neither_seen_nor_demoted(glance_server, target, tmp_path, source):
    image_path, sha256 = source
    manifest = write_manifest(tmp_path, image_path, sha256)
    theirs = connect_local(glance_server, project_id=target.project_id + "-other", roles=("member", "reader"))
    their_image = publish(theirs, manifest, "2026-10-01").image["id"]
    ours = publish(target, manifest, "2026-11-01")
    assert theirs.glance.images.get(their_image)["recommended"] == "true"
    assert ours.demoted == []
    assert ours.image["id"] not in [i["id"] for i in theirs.glance.images.list()]  # private to us: RBAC is real


def test_rerun_is_idempotent(target, tmp_path, source):
    image_path, sha256 = source
    manifest = write_manifest(tmp_path, image_path, sha256)
    first = publish(target, manifest, "2026-10-01")
    again = publish(target, manifest, "2026-10-01")
    assert again.image["id"] == first.image["id"]
    assert again.image["uploaded"] is False and "publish" not in again.timings
    assert len(project_images(target)) == 1


def test_rerun_without_memo_measures_instead_of_uploading(target, tmp_path, source, isolated_state):
    image_path, sha256 = source
    manifest = write_manifest(tmp_path, image_path, sha256)
    first = publish(target, manifest, "2026-10-01")
    subprocess.run(["rm", "-rf", str(isolated_state / "memo")], check=True)
    again = publish(target, manifest, "2026-10-01")
    assert again.image["id"] == first.image["id"] and again.image["uploaded"] is False
    assert "measure" in again.timings


def test_plan_changes_nothing(target, tmp_path, source):
    image_path, sha256 = source
    manifest = write_manifest(tmp_path, image_path, sha256)
    first = publish(target, manifest, "2026-10-01").image["id"]
    before = sorted((i["id"], i["updated_at"], i.get("recommended")) for i in project_images(target))

    report = Report("plan")
    chain.plan(chain.JobOptions(manifest, release_date="2026-11-01"), report, target=target)

    after = sorted((i["id"], i["updated_at"], i.get("recommended")) for i in project_images(target))
    assert before == after
    assert report.plan["would_demote"] == [first]
    assert report.plan["properties"]["release_date"] == "2026-11-01"
    assert report.plan["upload"]["size"] == 8 * MiB


def test_qcow2_source_is_published_as_raw(target, tmp_path, source):
    image_path, _ = source
    qcow2 = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", image_path, qcow2], check=True)

    manifest = write_manifest(tmp_path, qcow2, hashlib.sha256(qcow2.read_bytes()).hexdigest(), source={"format": "qcow2"})
    report = publish(target, manifest, "2026-10-01")
    stored = target.glance.images.get(report.image["id"])
    assert stored["disk_format"] == "raw"
    assert stored["checksum"] == hashlib.md5(image_path.read_bytes()).hexdigest()
    assert not list((tmp_path / "state" / "work").glob("*/image.raw"))  # the conversion was cleaned up


def test_pin_mismatch_stops_before_glance(target, tmp_path, source):
    image_path, sha256 = source
    manifest = write_manifest(tmp_path, image_path, "0" * 64)
    with pytest.raises(ManifestError) as caught:
        publish(target, manifest, "2026-10-01")
    assert "pin mismatch" in str(caught.value) and sha256 in str(caught.value)
    assert project_images(target) == []


def test_lint_error_stops_before_glance(target, tmp_path, source):
    image_path, sha256 = source
    manifest = write_manifest(tmp_path, image_path, sha256, os={"type": "Windows", "version": "10"})
    with pytest.raises(BakeryError, match="os-type-windows"):
        publish(target, manifest, "2026-10-01")
    assert project_images(target) == []


def test_format_pin_mismatch(target, tmp_path, source):
    image_path, sha256 = source
    manifest = write_manifest(tmp_path, image_path, sha256, source={"format": "qcow2"})
    with pytest.raises(BakeryError, match=r"manifest.yaml:\d+: source \(.*\): declared format qcow2, but the content is raw"):
        publish(target, manifest, "2026-10-01")
    assert project_images(target) == []


def test_an_older_release_does_not_bury_a_newer_one(target, tmp_path, source):
    image_path, sha256 = source
    manifest = write_manifest(tmp_path, image_path, sha256)
    newer = publish(target, manifest, "2026-11-01").image["id"]
    with pytest.raises(BakeryError, match="newer release"):
        publish(target, manifest, "2026-10-01")
    assert len(project_images(target)) == 1
    older = publish(target, manifest, "2026-10-01", allow_older=True).image["id"]
    assert target.glance.images.get(newer)["recommended"] == "false"
    assert target.glance.images.get(older)["recommended"] == "true"


def test_hide_policy_hides_the_previous_release(target, tmp_path, source):
    image_path, sha256 = source
    manifest = write_manifest(tmp_path, image_path, sha256, release={"previous": "hide"})
    first = publish(target, manifest, "2026-10-01").image["id"]
    publish(target, manifest, "2026-11-01")
    old = target.glance.images.get(first)
    assert old["os_hidden"] is True and old["recommended"] == "false"


def test_url_source_is_fetched_and_pinned(target, tmp_path, source):
    image_path, sha256 = source
    manifest = write_manifest(tmp_path, image_path, sha256, source={"path": None, "url": f"file://{image_path}"})
    report = publish(target, manifest, "2026-10-01")
    assert report.ok
    bad = write_manifest(tmp_path, image_path, "1" * 64, name="bad.yaml", source={"path": None, "url": f"file://{image_path}"})
    with pytest.raises(ManifestError, match="pin mismatch"):
        publish(target, bad, "2026-11-01")
