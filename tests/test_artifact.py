"""The chain split at an artifact: `invoke bake` (no Glance) then `invoke publish --artifact`, as CI jobs run them."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.conftest import MiB, free_port, make_image, one_line_error, project_images, run_invoke, write_manifest


@pytest.fixture
def baked(tmp_path):
    """A manifest and the artifact `invoke bake` made of it, with a Glance port nothing listens on."""
    image = tmp_path / "base.raw"
    manifest = write_manifest(tmp_path, image, make_image(image, 6 * MiB, seed="art", sparse_tail=2 * MiB),
                              family={"os_distro_major": "w10art"})
    out = tmp_path / "artifact"
    unused_port = free_port()
    proc = run_invoke("bake", "--manifest", str(manifest), "--out", str(out), "--release-date", "2026-11-01",
                      "--json", str(tmp_path / "bake.json"), state=tmp_path / "bake-state", env={"BAKERY_GLANCE_PORT": str(unused_port)})
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "bake-state" / "glance").exists(), "a bake must not start or reach Glance"
    return out, json.loads((tmp_path / "bake.json").read_text())


def publish(artifact, glance_server, tmp_path, json_name="publish.json"):
    proc = run_invoke("publish", "--artifact", str(artifact), "--json", str(tmp_path / json_name), state=glance_server.root.parent,
                      env={"BAKERY_GLANCE_PORT": str(glance_server.port)})
    report = json.loads((tmp_path / json_name).read_text()) if (tmp_path / json_name).exists() else None
    return proc, report


def test_bake_writes_a_content_addressed_record_of_the_bytes(baked):
    out, report = baked
    record = json.loads((out / "record.json").read_text())
    data = (out / "image.raw").read_bytes()
    assert record["image"]["size"] == len(data) and record["image"]["md5"] == hashlib.md5(data).hexdigest()
    assert record["image"]["sha512"] == hashlib.sha512(data).hexdigest()
    assert json.loads((out / "artifact.json").read_text())["id"] == hashlib.sha256((out / "record.json").read_bytes()).hexdigest()
    assert record["properties"]["os_type"] == "windows" and record["build_id"] == report["build_id"]
    assert report["details"]["artifact"]["id"] == json.loads((out / "artifact.json").read_text())["id"]


def test_publish_uploads_exactly_the_baked_bytes_and_releases(baked, glance_server, tmp_path):
    from pipeline.glance.connect import connect_local

    out, _ = baked
    record = json.loads((out / "record.json").read_text())
    proc, report = publish(out, glance_server, tmp_path)
    assert proc.returncode == 0, proc.stderr
    stored = connect_local(glance_server, start=False).glance.images.get(report["image"]["id"])
    assert stored["checksum"] == record["image"]["md5"] and stored["os_hash_value"] == record["image"]["sha512"]
    assert {k: stored[k] for k in record["properties"]} == record["properties"] and stored["recommended"] == "true"
    again, second = publish(out, glance_server, tmp_path, "again.json")  # a retried CI job publishes nothing new
    assert again.returncode == 0 and second["image"]["id"] == report["image"]["id"], again.stderr


@pytest.mark.parametrize("damage, fragments", [
    ("record", ("record.json", "the record was changed after the bake")),
    ("truncate", ("image.raw", "the record says")),
    ("address", ("not a bakery artifact",)),
], ids=["edited-record", "truncated-image", "no-address"])
def test_a_damaged_artifact_is_refused_before_any_upload(baked, glance_server, tmp_path, damage, fragments):
    out, _ = baked
    if damage == "record":
        record = json.loads((out / "record.json").read_text())
        record["properties"]["os_type"] = "linux"
        (out / "record.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    elif damage == "truncate":
        with open(out / "image.raw", "r+b") as image:
            image.truncate(MiB)
    else:
        (out / "artifact.json").unlink()
    proc, _ = publish(out, glance_server, tmp_path)
    one_line_error(proc, *fragments)
    assert "created hidden image" not in proc.stderr


def test_bytes_changed_in_place_are_caught_by_the_upload_and_nothing_is_released(baked, glance_server, tmp_path):
    from pipeline.glance.connect import connect_local

    out, _ = baked
    target = connect_local(glance_server, start=False)
    before = {i["id"] for i in project_images(target)}
    with open(out / "image.raw", "r+b") as image:  # same size, one byte different: only the hashes can tell
        image.seek(3 * MiB)
        original = image.read(1)
        image.seek(3 * MiB)
        image.write(bytes([original[0] ^ 0xFF]))
    proc, _ = publish(out, glance_server, tmp_path)
    line = one_line_error(proc)
    assert "sha512" in line or "md5" in line or "checksum" in line, line
    assert {i["id"] for i in project_images(target)} == before  # nothing half-published


def test_the_cache_handoff_passes_a_record_and_publishes_the_cached_bytes(tmp_path, glance_server):
    """What CI jobs pass on with the shared stage cache: kilobytes; the image stays in the cache both jobs mount."""
    from pipeline.glance.connect import connect_local

    image = tmp_path / "base.raw"
    manifest = write_manifest(tmp_path, image, make_image(image, 6 * MiB, seed="handoff", sparse_tail=26 * MiB),
                              family={"os_distro_major": "w10handoff"})
    out, cache = tmp_path / "artifact", tmp_path / "shared-cache"
    proc = run_invoke("bake", "--manifest", str(manifest), "--out", str(out), "--handoff", "cache", "--release-date", "2026-11-01",
                      state=tmp_path / "bake-state", env={"BAKERY_CACHE_DIR": str(cache), "BAKERY_GLANCE_PORT": str(free_port())})
    assert proc.returncode == 0, proc.stderr
    assert not (out / "image.raw").exists() and sum(f.stat().st_size for f in out.iterdir()) < 64 * 1024
    record = json.loads((out / "record.json").read_text())
    assert record["image"]["file"] is None and record["image"]["cache_entry"] == f"build/{record['stages']['build']}"
    cached = cache / "build" / record["stages"]["build"] / "image.raw"
    assert cached.stat().st_size == 32 * MiB and cached.stat().st_blocks * 512 < 16 * MiB  # sparse in the cache

    elsewhere = run_invoke("publish", "--artifact", str(out), state=glance_server.root.parent,
                           env={"BAKERY_GLANCE_PORT": str(glance_server.port), "BAKERY_CACHE_DIR": str(tmp_path / "other-cache")})
    one_line_error(elsewhere, "record.json", "is not in this runner's stage cache")
    report = tmp_path / "publish.json"
    proc = run_invoke("publish", "--artifact", str(out), "--json", str(report), state=glance_server.root.parent,
                      env={"BAKERY_GLANCE_PORT": str(glance_server.port), "BAKERY_CACHE_DIR": str(cache)})
    assert proc.returncode == 0, proc.stderr
    published = json.loads(report.read_text())["image"]
    stored = connect_local(glance_server, start=False).glance.images.get(published["id"])
    assert stored["os_hash_value"] == record["image"]["sha512"] and stored["size"] == 32 * MiB
