"""Publishing the way each cloud wants it: the import API, stores, qcow2 staging where the cloud converts,
web-download, several targets, copy-image; always proving what the server stored.

Against the local test cloud's Glance: two file stores (fast, cheap), the import methods, the
image_conversion plugin, and Glance's own format inspector on uploads.
"""

from __future__ import annotations

import http.server
import os
import threading

import pytest

from pipeline.glance.capabilities import discover
from tests.conftest import MiB, ok, one_line_error


def test_what_the_cloud_offers_is_read(account):
    caps = discover(account.target("bakery-member"))
    assert {"glance-direct", "web-download", "copy-image"} <= set(caps.import_methods)
    assert caps.stores == ("fast", "cheap") and caps.default_store == "fast"


def test_a_sparse_image_is_staged_as_qcow2_and_stored_as_the_exact_raw(account):
    manifest = account.manifest("sparse.yaml", size=8 * MiB, sparse_tail=248 * MiB, upload=None)
    proc, planned = account.run("plan", "--manifest", str(manifest))
    ok(proc, planned)  # a plan writes to no cloud: the probe is not made, and the plan says so
    assert "not probed yet" in planned["plan"]["route"]["why"] and not (account.state / "capabilities").exists()
    report = ok(*account.run("build-and-publish", "--manifest", str(manifest), json_name="publish.json"))
    proc, planned = account.run("plan", "--manifest", str(manifest), json_name="plan-again.json")
    ok(proc, planned)  # the real run probed: now the plan knows the route
    assert planned["plan"]["route"]["method"] == "glance-direct" and planned["plan"]["route"]["stage_format"] == "qcow2"
    assert "converts" in planned["plan"]["route"]["why"]
    image = report["image"]
    assert image["size"] == 256 * MiB and image["sent_bytes"] < 16 * MiB  # 8 MiB of data went over the wire, not 256
    stored = account.target("bakery-member").glance.images.get(image["id"])
    assert stored["disk_format"] == "raw" and stored["virtual_size"] == 256 * MiB
    assert stored["os_hash_value"] == image["os_hash_value"]


def test_invoke_probe_learns_what_plan_then_shows(account):
    probed = ok(*account.run("probe", json_name="probe.json"))
    assert probed["details"]["probe"] == {"glance_direct": True, "converts_qcow2": True}
    assert len(list((account.state / "capabilities").iterdir())) == 1
    manifest = account.manifest("probed.yaml", size=2 * MiB, sparse_tail=30 * MiB, upload=None)
    planned = ok(*account.run("plan", "--manifest", str(manifest), json_name="plan.json"))
    assert planned["plan"]["route"]["stage_format"] == "qcow2" and "not probed" not in planned["plan"]["route"]["why"]


@pytest.mark.parametrize("stores, expected", [(["fast", "cheap"], {"fast", "cheap"}), ("all", {"fast", "cheap"}), (["cheap"], {"cheap"})],
                         ids=["two-stores", "all-stores", "one-store"])
def test_stores(account, stores, expected):
    manifest = account.manifest("stores.yaml", upload={"stores": stores, "stage_format": "raw"})
    report = ok(*account.run("build-and-publish", "--manifest", str(manifest)))
    stored = account.target("bakery-member").glance.images.get(report["image"]["id"])
    assert set(stored["stores"].split(",")) == expected
    assert report["details"]["route"]["method"] == ("direct" if stores == ["cheap"] else "glance-direct")


def test_web_download_is_verified_against_the_bytes_the_bakery_built(account, tmp_path):
    class Serve(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Serve)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/web.yaml.raw"  # the image account.manifest writes
        manifest = account.manifest("web.yaml", upload={"method": "web-download", "web_download_url": url})
        served = manifest.with_name("web.yaml.raw")
        report = ok(*account.run("build-and-publish", "--manifest", str(manifest)))
    finally:
        server.shutdown()
    assert report["details"]["route"]["method"] == "web-download" and report["image"]["sent_bytes"] == 0
    assert report["image"]["size"] == served.stat().st_size


@pytest.mark.parametrize("upload, fragments", [
    ({"method": "web-download", "web_download_url": "http://127.0.0.1:9/x.raw"}, ("web-download is not offered", "glance-direct")),
    ({"stores": ["ceph-b"]}, ("upload.stores: ceph-b unknown",)),
], ids=["method-not-offered", "unknown-store"])
def test_what_a_cloud_cannot_do_is_refused_before_anything_is_created(glance_server, tmp_path, upload, fragments):
    """On the trusted local Glance: one store, glance-direct only."""
    from tests.conftest import make_image, run_invoke, write_manifest

    image = tmp_path / "x.raw"
    manifest = write_manifest(tmp_path, image, make_image(image, MiB), family={"os_distro_major": f"w10x{os.getpid()}"},
                              upload=upload)
    state = glance_server.root.parent
    proc = run_invoke("build-and-publish", "--manifest", str(manifest), state=state, env={"BAKERY_GLANCE_PORT": str(glance_server.port)})
    line = one_line_error(proc, *fragments)
    assert "created hidden image" not in proc.stderr, line


def test_several_targets_each_verified_and_released(account):
    manifest = account.manifest("multi.yaml")
    report = ok(*account.run("build-and-publish", "--manifest", str(manifest), "--cloud", "bakery-other", cloud_name="bakery-member"))
    targets = {t["name"]: t for t in report["details"]["targets"]}
    assert set(targets) == {"bakery-member", "bakery-other"} and all(t["ok"] for t in targets.values())
    ids = {t["image"]["id"] for t in targets.values()}
    owners = {account.target("bakery-admin").glance.images.get(i)["owner"] for i in ids}
    assert len(ids) == 2 and len(owners) == 2  # one image per project


def test_a_failed_target_fails_the_run_and_the_others_keep_their_release(account):
    first = ok(*account.run("build-and-publish", "--manifest", str(account.manifest("old.yaml")), "--release-date", "2026-10-01",
                            cloud_name="bakery-admin"))
    manifest = account.manifest("pub.yaml", visibility="public")
    proc, report = account.run("build-and-publish", "--manifest", str(manifest), "--release-date", "2026-11-01", "--cloud",
                               "bakery-admin", cloud_name="bakery-member")
    one_line_error(proc, "1 of 2 targets failed", "bakery-member", "publicize_image")
    targets = {t["name"]: t for t in report["details"]["targets"]}
    assert targets["bakery-admin"]["ok"] and not targets["bakery-member"]["ok"]
    admin = account.target("bakery-admin")
    assert admin.glance.images.get(targets["bakery-admin"]["image"]["id"])["recommended"] == "true"
    assert admin.glance.images.get(first["image"]["id"])["recommended"] == "false"  # superseded in the admin project only
    member_images = [i for i in account.images() if i["owner"] == account.cloud._state()["users"]["image-builder"]["project_id"]]
    assert member_images == []  # nothing half-published where it failed


def test_copy_image_into_another_store(account):
    """Glance's default policy lets only admins copy images between stores: a member is told so in one line."""
    report = ok(*account.run("build-and-publish", "--manifest", str(account.manifest("copy.yaml", visibility="community", upload={"stage_format": "raw"})),
                             cloud_name="bakery-admin"))
    image_id = report["image"]["id"]
    proc, _ = account.run("copy-image", "--image", image_id, "--store", "cheap", json_name="refused.json")
    one_line_error(proc, "copy_image", "policy")
    copied = ok(*account.run("copy-image", "--image", image_id, "--store", "cheap", json_name="copy.json", cloud_name="bakery-admin"))
    assert set(copied["details"]["copy"]["stores"]) == {"fast", "cheap"}
    assert copied["details"]["copy"]["checksum"] == report["image"]["checksum"]


@pytest.fixture
def full_cheap_store(account):
    """The cloud's 'cheap' store on a 64 KiB tmpfs that is full: writes to it fail (needs root)."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    store = account.cloud.root / "glance" / "images-cheap"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(store)], check=True)
    try:
        (store / "filler").write_bytes(b"\0" * 60 * 1024)
        yield store
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)


def test_a_failing_store_with_all_stores_must_succeed_leaves_nothing(account, full_cheap_store):
    previous = ok(*account.run("build-and-publish", "--manifest", str(account.manifest("prev.yaml")), "--release-date", "2026-10-01"))
    manifest = account.manifest("both.yaml", size=4 * MiB, upload={"stores": ["fast", "cheap"], "stage_format": "raw"})
    proc, _ = account.run("build-and-publish", "--manifest", str(manifest), "--release-date", "2026-11-01", json_name="fail.json")
    one_line_error(proc, "bakery-member", "cheap", "failed", "the previous release is untouched")
    images = account.images()
    assert [i["id"] for i in images] == [previous["image"]["id"]] and images[0]["recommended"] == "true"


def test_a_failing_store_may_be_tolerated_when_the_manifest_says_so(account, full_cheap_store):
    manifest = account.manifest("some.yaml", size=4 * MiB,
                                upload={"stores": ["fast", "cheap"], "stage_format": "raw", "all_stores_must_succeed": False})
    proc, report = account.run("build-and-publish", "--manifest", str(manifest))
    ok(proc, report)
    assert "cheap" in proc.stderr and "kept in the others" in proc.stderr
    stored = account.target("bakery-member").glance.images.get(report["image"]["id"])
    assert stored["stores"] == "fast" and stored["recommended"] == "true"


def test_the_server_restarting_mid_stage_is_survived_once(account):
    from tests import faults

    glance = account.cloud.glance()
    master = int(glance.pid_file.read_text())
    watcher = faults.when_upload_reaches(glance.root / "staging", 16 * MiB, lambda: faults.kill_worker(master))
    manifest = account.manifest("staged.yaml", size=96 * MiB, upload={"method": "glance-direct", "stage_format": "raw"})
    proc, report = account.run("build-and-publish", "--manifest", str(manifest))
    ok(proc, report)
    assert watcher.count == 1 and "starting once more on a fresh image" in proc.stderr
    assert [i["id"] for i in account.images()] == [report["image"]["id"]]
