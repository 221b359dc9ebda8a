"""Failures during publish: nothing half-published stays visible, the good release stays recommended."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from glanceclient import Client as GlanceClient
from keystoneauth1 import session

from pipeline import chain
from pipeline.common.errors import BakeryError, PublishError
from pipeline.common.report import Report
from pipeline.glance.connect import Target, TrustedHeaders, connect_local
from pipeline.glance.local import LocalGlance
from tests import faults
from tests.conftest import MiB, free_port, make_image, project_images, write_manifest

BIG = 192 * MiB  # sparse: large enough to interrupt mid-stream, cheap to make


def publish(target, manifest, release_date):
    report = Report("build-and-publish")
    chain.build_and_publish(chain.JobOptions(manifest, release_date=release_date), report, target=target)
    return report


@pytest.fixture
def own_server(tmp_path):
    """A Glance of this test's own, since the test kills it."""
    server = LocalGlance(root=tmp_path / "glance", port=free_port())
    server.up(timeout=120)
    yield server
    server.down()


@pytest.fixture
def releases(tmp_path):
    """A small first release and a big second one (sparse) that the fault interrupts."""
    small, big = tmp_path / "small.raw", tmp_path / "big.raw"
    small_sha = make_image(small, 2 * MiB, seed="small")
    big_sha = make_image(big, 4 * MiB, seed="big", sparse_tail=BIG - 4 * MiB)
    return write_manifest(tmp_path, small, small_sha, name="r1.yaml"), write_manifest(tmp_path, big, big_sha, name="r2.yaml")


def assert_first_release_untouched(target, first_id):
    images = project_images(target)
    assert [i["id"] for i in images] == [first_id], "a partial image was left behind"
    first = images[0]
    assert first["recommended"] == "true" and "superseded_by" not in first


def test_a_worker_killed_mid_upload_is_retried_once_on_a_fresh_image(own_server, project, releases, monkeypatch):
    monkeypatch.setenv("BAKERY_CLEANUP_RETRY_S", "60")
    target = connect_local(own_server, project_id=project)
    r1, r2 = releases
    first = publish(target, r1, "2026-10-01").image["id"]
    master = int(own_server.pid_file.read_text())
    watcher = faults.when_upload_reaches(own_server.root / "images", 16 * MiB, lambda: faults.kill_worker(master))

    second = publish(target, r2, "2026-11-01").image["id"]
    assert watcher.count == 1
    assert sorted(i["id"] for i in project_images(target)) == sorted([first, second])  # the partial one was deleted
    assert target.glance.images.get(second)["recommended"] == "true"
    assert target.glance.images.get(first)["superseded_by"] == second


def test_server_restarted_twice_mid_upload(own_server, project, releases, monkeypatch):
    """The retry happens once: a second failure ends the run, with nothing left and nothing demoted."""
    monkeypatch.setenv("BAKERY_CLEANUP_RETRY_S", "60")
    target = connect_local(own_server, project_id=project)
    r1, r2 = releases
    first = publish(target, r1, "2026-10-01").image["id"]
    master = int(own_server.pid_file.read_text())
    watcher = faults.when_upload_reaches(own_server.root / "images", 16 * MiB, lambda: faults.kill_worker(master), times=2)

    with pytest.raises(PublishError) as caught:
        publish(target, r2, "2026-11-01")
    assert watcher.count == 2

    message = caught.value.one_line()
    assert "\n" not in message and "the partial image was deleted" in message and "previous release is untouched" in message
    assert_first_release_untouched(target, first)


def test_server_down_mid_upload_then_next_run_cleans_up(own_server, project, releases, monkeypatch, isolated_state):
    monkeypatch.setenv("BAKERY_CLEANUP_RETRY_S", "1")
    target = connect_local(own_server, project_id=project)
    r1, r2 = releases
    first = publish(target, r1, "2026-10-01").image["id"]
    master = int(own_server.pid_file.read_text())
    watcher = faults.when_upload_reaches(own_server.root / "images", 16 * MiB, lambda: faults.kill_server(master))

    with pytest.raises(PublishError) as caught:
        publish(target, r2, "2026-11-01")
    assert watcher.fired.is_set()
    assert "could not be deleted now" in caught.value.one_line()
    assert len(list((isolated_state / "journal").rglob("*.json"))) == 1

    own_server.up(timeout=120)  # the stale pid file is noticed and replaced
    leftovers = [i for i in project_images(target) if i["id"] != first]
    assert leftovers and all(i["os_hidden"] and i["visibility"] == "private" for i in leftovers)  # never visible

    report = publish(target, r1, "2026-10-01")  # any next run sweeps the journal first
    assert report.cleaned_up == [leftovers[0]["id"]]
    assert_first_release_untouched(target, first)
    assert not list((isolated_state / "journal").rglob("*.json"))


def test_corrupted_stream_is_caught_by_verification(glance_server, project, releases):
    direct = connect_local(glance_server, project_id=project)
    r1, r2 = releases
    first = publish(direct, r1, "2026-10-01").image["id"]
    proxy = faults.CorruptingProxy(glance_server.port, flip_at=int(2.5 * MiB))
    try:
        auth = TrustedHeaders(proxy.url, project, "bakery", ("admin", "member", "reader"))
        through_proxy = Target(GlanceClient("2", session=session.Session(auth=auth)), "via corrupting proxy", project, True)
        with pytest.raises(PublishError) as caught:
            publish(through_proxy, r2, "2026-11-01")
    finally:
        proxy.close()
    assert proxy.flipped.is_set()
    assert "verification failed" in caught.value.one_line() and "checksum" in caught.value.one_line()
    assert_first_release_untouched(direct, first)


def test_ctrl_c_mid_upload_deletes_the_partial_image(glance_server, project, releases):
    target = connect_local(glance_server, project_id=project)
    r1, r2 = releases
    first = publish(target, r1, "2026-10-01").image["id"]
    main = threading.main_thread().ident
    watcher = faults.when_upload_reaches(glance_server.root / "images", 16 * MiB, lambda: signal.pthread_kill(main, signal.SIGINT))

    with pytest.raises(KeyboardInterrupt):
        publish(target, r2, "2026-11-01")
    assert watcher.fired.is_set()
    assert_first_release_untouched(target, first)


# -- the journal itself must not fail -------------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real file system of `size` at `mount`, for as long as the block lasts (mounting needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs, filled up: the journal's file system with no space left."""
    with tmpfs(tmp_path / "full", "64k") as mount:
        (mount / "journal").mkdir()
        try:
            with open(mount / "filler", "wb") as filler:
                while True:
                    filler.write(b"\0" * 4096)
                    filler.flush()
        except OSError:  # ENOSPC: full, as intended
            pass
        yield mount


def test_a_full_disk_stops_the_run_before_an_image_exists(glance_server, project, releases, small_disk, monkeypatch, isolated_state):
    from pipeline.publish import journal as journal_module

    target = connect_local(glance_server, project_id=project)
    r1, r2 = releases
    first = publish(target, r1, "2026-10-01").image["id"]
    monkeypatch.setattr(journal_module.Journal, "__init__", _journal_on(small_disk, journal_module.Journal.__init__))
    with pytest.raises(BakeryError) as caught:
        publish(target, r2, "2026-11-01")
    assert "cannot write the publish journal" in caught.value.one_line()
    assert "No space left on device" in caught.value.one_line() and "nothing was created" in caught.value.one_line()
    assert_first_release_untouched(target, first)


def _journal_on(directory, original):
    def init(self, _directory, target):
        original(self, directory / "journal", target)
    return init


def test_an_unreadable_journal_entry_is_set_aside_not_fatal(target, releases, isolated_state):
    from pipeline.publish.journal import Journal

    r1, r2 = releases
    first = publish(target, r1, "2026-10-01").image["id"]
    entries = Journal(isolated_state / "journal", target).directory
    entries.mkdir(parents=True, exist_ok=True)
    (entries / "0b6bd3e4-0000-4000-8000-000000000000.json").write_bytes(b"")
    (entries / "garbage.json").write_text("{not json")
    report = publish(target, r2, "2026-11-01")
    assert report.ok and sorted(report.details["journal_unreadable"]) == ["0b6bd3e4-0000-4000-8000-000000000000.json", "garbage.json"]
    assert not list(entries.glob("*.json"))
    assert target.glance.images.get(first)["superseded_by"] == report.image["id"]


def test_the_local_glance_removes_stored_files_no_image_references(own_server, project, releases):
    target = connect_local(own_server, project_id=project)
    kept = publish(target, releases[0], "2026-10-01").image
    own_server.down()
    orphan = own_server.root / "images" / "5f0c2a9e-dead-4bad-8bad-000000000001"
    orphan.write_bytes(b"partial upload of a killed worker" * 1000)
    own_server.up(timeout=120)
    assert not orphan.exists()
    data = b"".join(target.glance.images.data(kept["id"]))  # the referenced file stays, bytes intact
    assert hashlib.md5(data).hexdigest() == kept["checksum"]


def test_stray_files_are_reported_and_removed_while_the_local_glance_runs(own_server, project, releases):
    """No restart needed: audit reports what killed uploads left and --repair removes it; the next run's
    connection removes it too. A file still being written (an image in 'saving', or touched recently) stays."""
    from pipeline.publish import audit

    target = connect_local(own_server, project_id=project)
    kept = publish(target, releases[0], "2026-10-01").image
    stray = own_server.root / "images" / "5f0c2a9e-dead-4bad-8bad-000000000002"
    stray.write_bytes(b"partial upload of a killed worker" * 1000)
    fresh = own_server.root / "images" / "5f0c2a9e-dead-4bad-8bad-000000000003"
    fresh.write_bytes(b"an upload whose record is not saved yet")
    old = time.time() - 3600
    os.utime(stray, (old, old))
    saving = target.glance.images.create(name="receiving", disk_format="raw", container_format="bare")
    with sqlite3.connect(own_server.root / "glance.sqlite") as db:  # what Glance records before it writes the data
        db.execute("UPDATE images SET status = 'saving' WHERE id = ?", (saving["id"],))
    receiving = own_server.root / "images" / saving["id"]
    receiving.write_bytes(b"being received")
    os.utime(receiving, (old, old))

    seen = audit.audit(target, Report("audit")).details["stray_files"]
    assert seen["files"] == [stray.name] and seen["bytes"] == stray.stat().st_size and not seen["removed"]
    assert stray.exists()
    repaired = audit.audit(target, Report("audit"), repair=True).details["stray_files"]
    assert repaired["removed"] and not stray.exists()
    assert fresh.exists() and receiving.exists()
    stray.write_bytes(b"another killed upload")
    os.utime(stray, (old, old))
    connect_local(own_server, project_id=project)  # the next run cleans up on its way in
    assert not stray.exists() and fresh.exists() and receiving.exists()
    data = b"".join(target.glance.images.data(kept["id"]))
    assert hashlib.md5(data).hexdigest() == kept["checksum"]


def test_transient_503s_on_safe_calls_are_retried(glance_server, project, releases):
    """Glance answering 503 to a few reads (a proxy restarting, say) does not fail the release."""
    from pipeline.glance.connect import RETRIES

    direct = connect_local(glance_server, project_id=project)
    first = publish(direct, releases[0], "2026-10-01").image["id"]
    proxy = faults.FlakyProxy(glance_server.port, fail=3)
    try:
        auth = TrustedHeaders(proxy.url, project, "bakery", ("admin", "member", "reader"))
        sess = session.Session(auth=auth)
        flaky = Target(GlanceClient("2", session=sess, **RETRIES), "via a flaky proxy", project, True,
                       uploader=GlanceClient("2", session=sess))
        second = publish(flaky, releases[1], "2026-11-01").image["id"]
    finally:
        proxy.close()
    assert proxy.injected == 3
    assert direct.glance.images.get(second)["recommended"] == "true"
    assert direct.glance.images.get(first)["superseded_by"] == second


def test_a_health_check_is_answered_while_an_upload_is_in_progress(own_server, project):
    """An upload that takes as long as it likes (held here until the health check has been answered) must not
    make the server deaf: with one sync worker the check would wait for the whole upload."""
    import requests

    target = connect_local(own_server, project_id=project)
    image = target.glance.images.create(name="slow upload", disk_format="raw", container_format="bare")
    with faults.held_upload(target.uploader, image["id"], hold=120):
        answer = requests.get(f"{own_server.url}/healthcheck", timeout=60)  # the bound only matters if deaf
        listed = [i["id"] for i in connect_local(own_server, project_id=project).glance.images.list()]  # a second client
    assert answer.status_code == 200 and image["id"] in listed
    assert target.glance.images.get(image["id"])["size"] == 2 * 65536


def test_a_sigkilled_idle_master_leaves_no_deaf_glance_behind(own_server):
    """The master dies at a quiet moment; its orphaned worker must not keep the port. The next glance-up
    serves again at once, stopping any worker still there (known by the state directory)."""
    import os
    import time

    from pipeline.glance.server import alive

    master = own_server.status().pid
    workers = [pid for pid in own_server.orphans() if pid != master]
    assert workers, "gunicorn should have a worker besides its master"
    os.kill(master, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(master) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(master)
    # the gthread worker notices its master is gone within a second or so and leaves; a worker that has not
    # (a sync one would hold the port for its whole request timeout) is found by glance-up and stopped
    restarted = own_server.up(timeout=60)
    assert restarted.healthy and restarted.pid != master
    assert not any(alive(pid) for pid in workers)
    assert set(own_server.orphans()) >= {restarted.pid}


# -- a disk that fills up while the bakery reads an image ---------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs: smaller than the image the test downloads."""
    with tmpfs(tmp_path / "tiny", "2m") as mount:
        yield mount


def test_a_download_that_fills_the_disk_is_one_line_and_leaves_no_partial_copy(target, tiny_disk, tmp_path):
    """inspect and lint --image download the image first: a disk that fills up says where, how much was needed and
    what was free, and the partial copy goes (the close that flushed a buffer used to raise a second ENOSPC)."""
    from pipeline.chain.inspecting import inspect_glance_image
    from pipeline.glance.images import fetch_image

    data = tmp_path / "data.raw"
    data.write_bytes(os.urandom(6 * MiB))
    image = target.glance.images.create(name="too big to inspect here", disk_format="raw", container_format="bare")
    with open(data, "rb") as source:
        target.glance.images.upload(image["id"], source)
    with pytest.raises(BakeryError) as caught:
        inspect_glance_image(target, fetch_image(target, image["id"]), tiny_disk / "inspect")
    line = caught.value.one_line()
    assert line.startswith(f"{tiny_disk / 'inspect'}: no space left for image {image['id']}"), line
    assert "6.0 MiB" in line and "the partial copy was removed" in line
    assert list((tiny_disk / "inspect").iterdir()) == []


def test_a_full_disk_anywhere_in_a_command_is_one_line_not_an_internal_error(tiny_disk, capsys):
    """Whatever step meets a full file system, the command ends with one line saying so and where to look."""
    from invoke.exceptions import Exit

    from pipeline.cli import execute

    def fill(report):
        with open(tiny_disk / "filler", "wb", buffering=0) as filler:
            while True:
                filler.write(b"x" * 65536)

    with pytest.raises(Exit):
        execute("bake", None, fill, summary=False)
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "no space left on device" in error[0] and "internal error" not in error[0], error
    assert "BAKERY_STATE_DIR" in error[0]


def test_a_report_that_cannot_be_written_at_the_end_fails_the_command_in_one_line(tiny_disk, capsys):
    """The --json folder was writable when the command began and full when it ended: the command does not pass
    with its report missing, and says so on the one error line."""
    from invoke.exceptions import Exit

    from pipeline.cli import execute

    def fill(report):
        report.ok = True
        try:
            with open(tiny_disk / "filler", "wb", buffering=0) as filler:
                while True:
                    filler.write(b"x" * 65536)
        except OSError:
            pass  # full: the command itself succeeded

    with pytest.raises(Exit) as ended:
        execute("lint", str(tiny_disk / "report.json"), fill, summary=False)
    assert ended.value.code == 1
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "the report could not be written" in error[0], error
    assert not (tiny_disk / "report.json").exists()
