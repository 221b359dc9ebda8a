"""The concurrency, fault and lifecycle guarantees on a cloud shaped like production: Keystone and a Glance of
several worker processes (each with threads) on MariaDB, so that two runs' requests really meet on the
server and in the database, which the one-process sqlite Glance never allowed.

The cloud is LocalCloud(production_shaped=True), the same `invoke cloud-up --production-shaped` starts: a
private mariadbd (Debian's mariadb-server binaries, its own datadir, socket and port in the test's
directory), Keystone and Glance configured for it. The guarantees are the same tests tests/test_cloud.py
runs on the sqlite cloud, run again here; one more holds an upload open on the server while publishers and a
lifecycle run go through, and reads Glance's access log to show their requests overlapped it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests import test_cloud
from tests.conftest import account_on, free_port, ok
from tests.faults import held_upload

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def production_cloud(tmp_path_factory):
    if not (shutil.which("mariadbd") or Path("/usr/sbin/mariadbd").exists()) or not shutil.which("mariadb-install-db"):
        pytest.skip("mariadb-server is not installed: `CI=1 make deps` installs it")
    from pipeline.glance.localcloud import LocalCloud

    local = LocalCloud(tmp_path_factory.mktemp("prodcloud"), keystone_port=free_port(), glance_port=free_port(),
                       consumer_ports=(free_port(), free_port()), production_shaped=True, mariadb_port=free_port())
    local.up(timeout=600)
    yield local
    local.down()


@pytest.fixture
def account(production_cloud, tmp_path, monkeypatch):
    yield from account_on(production_cloud, tmp_path, monkeypatch)


def test_it_is_mariadb_and_several_glance_processes(production_cloud):
    glance = production_cloud.glance()
    assert glance.connection.startswith("mysql+pymysql://") and production_cloud.keystone.database_url.startswith("mysql+pymysql://")
    master = glance.status().pid
    workers = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    assert len(workers) >= 3, workers


@pytest.mark.parametrize("runs", [3, 4])
def test_concurrent_publishers_of_one_family_converge(account, runs):
    test_cloud.test_concurrent_publishers_of_one_family_converge(account, runs)


def test_concurrent_runs_of_the_same_build_publish_one_image(account):
    test_cloud.test_concurrent_runs_of_the_same_build_publish_one_image(account)


def test_runs_killed_at_random_moments_are_repaired_by_the_next_run(account):
    test_cloud.test_runs_killed_at_random_moments_are_repaired_by_the_next_run(account)


def test_publishers_and_a_lifecycle_run_overlap_on_the_server_and_converge(account, production_cloud):
    """An upload is held open on the server (its body waits for the test) while four publishers, two of them
    with the same release date, and a lifecycle run go through: their requests are served during it, by more
    than one worker process, and the family still ends with exactly one recommended release."""
    member = account.target("bakery-member")
    held = member.glance.images.create(name=f"held-{uuid.uuid4().hex[:6]}", disk_format="raw", container_format="bare")
    with held_upload(member.uploader, held["id"], hold=900) as uploader:
        account.family = f"w10p{uuid.uuid4().hex[:8]}"
        releases = [("2026-09-01", "a"), ("2026-10-01", "b"), ("2026-11-01", "c"), ("2026-11-01", "d")]
        runs = [test_cloud.start(account, account.manifest(f"p-{date}-{tag}.yaml"), date, f"p-{date}-{tag}") for date, tag in releases]
        policy = {"hide_after_days": 14}
        lifecycle = account.run("lifecycle", "--manifest", str(account.manifest("lc.yaml", release={"lifecycle": policy})),
                                "--today", "2026-12-01", "--apply", json_name="lifecycle.json")
        ok(*lifecycle)
        for proc, _ in runs:
            proc.wait(timeout=900)
            errors = proc.stderr.read()
            assert proc.returncode == 0 or "already recommends a newer release" in errors, errors
        still_open = uploader.is_alive()
    assert still_open, "the held upload ended before the others: nothing overlapped it"
    newest = test_cloud.assert_converged(account)
    assert newest["release_date"] == "2026-11-01"

    entries = _access_log(production_cloud.glance().access_log)
    held_entry = next(e for e in entries if e["method"] == "PUT" and held["id"] in e["path"])
    during = [e for e in entries if e is not held_entry and held_entry["start"] <= e["end"] <= held_entry["end"]]
    assert len([e for e in during if e["method"] in ("PUT", "PATCH")]) >= 4, during[:5]
    assert len({e["pid"] for e in entries}) >= 2


ACCESS = re.compile(r'<(?P<pid>\d+)> \[(?P<time>[^\]]+)\] (?P<micros>\d+) "(?P<method>[A-Z]+) (?P<path>\S+)[^"]*" (?P<status>\d+)')


def _access_log(path: Path) -> list[dict]:
    import datetime as dt

    entries = []
    for line in path.read_text().splitlines():
        match = ACCESS.match(line)
        if not match:
            continue
        end = dt.datetime.strptime(match["time"], "%d/%b/%Y:%H:%M:%S %z").timestamp() + 1  # the log has whole seconds
        entries.append({"pid": match["pid"], "method": match["method"], "path": match["path"],
                        "end": end, "start": end - 1 - int(match["micros"]) / 1e6})
    return entries


def test_the_bakery_reads_images_through_the_shared_image_cache_and_a_deleted_one_leaves_no_copy(account, production_cloud):
    """Glance's image cache as several workers share it in production (centralized_db: its records in MariaDB,
    keyed by the node's self-reference URL): the bakery's downloads go through it and still judge the stored
    bytes, the second one is a cache hit, and deleting the image removes the cached copy."""
    import hashlib

    image_id = ok(*account.run("build-and-publish", "--manifest", str(account.manifest("cached.yaml")), "--release-date",
                               "2026-11-01", json_name="cached.json"))["image"]["id"]
    glance = production_cloud.glance()
    cached = glance.root / "image-cache" / image_id
    ok(*account.run("lint", "--image", image_id, json_name="lint-1.json"))
    assert _eventually(cached.is_file), sorted(p.name for p in (glance.root / "image-cache").rglob("*"))
    stored = account.target("bakery-admin").glance.images.get(image_id)
    assert hashlib.sha512(cached.read_bytes()).hexdigest() == stored["os_hash_value"]
    ok(*account.run("lint", "--image", image_id, json_name="lint-2.json"))

    def hits() -> list[tuple]:
        return glance._query(f"SELECT c.hits, n.node_reference_url FROM cached_images c JOIN node_reference n "
                             f"ON c.node_reference_id = n.node_reference_id WHERE c.image_id = '{image_id}'")[0]

    assert _eventually(lambda: hits() and hits()[0][0] >= 1), hits()
    assert hits()[0][1].rstrip("/") == glance.url.rstrip("/")
    account.target("bakery-admin").glance.images.delete(image_id)
    assert _eventually(lambda: not cached.exists() and not hits()), (cached.exists(), hits())


def _eventually(condition, seconds: float = 60) -> bool:
    """Whether `condition` holds within `seconds` (the cache is written as the download's last bytes leave)."""
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_stray_files_are_found_in_mariadb_s_records_and_removed_at_restart(account, production_cloud):
    import os
    import time

    published = ok(*account.run("build-and-publish", "--manifest", str(account.manifest("stray.yaml")), "--release-date",
                                "2026-11-01", json_name="stray.json"))["image"]
    glance = production_cloud.glance()
    stray = glance.root / "images" / "5f0c2a9e-dead-4bad-8bad-0000000000aa"
    stray.write_bytes(b"partial upload of a killed worker" * 100)
    old = time.time() - 3600
    os.utime(stray, (old, old))
    assert [p.name for p in glance.stray_files()] == [stray.name]  # read from MariaDB, with the server running
    glance.down()
    glance.up(timeout=120)
    assert not stray.exists()
    assert (glance.root / "images" / published["id"]).exists()
