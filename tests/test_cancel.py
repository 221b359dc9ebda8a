"""GitLab cancels a job, or ends one past its timeout, with SIGTERM: every stage cleans up as it does on Ctrl-C
(mounts, daemons, VMs, partial images, work directories) and says in one line that it was cancelled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipeline.common.paths import PROJECT_ROOT
from tests.conftest import MiB, make_image, processes_mentioning, write_manifest

INVOKE = PROJECT_ROOT / ".venv/bin/invoke"


def mounts_under(path: Path) -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines() if str(path) in line]


def start(args: list[str], state: Path, env: dict | None = None) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    environment.update({"BAKERY_STATE_DIR": str(state), "BAKERY_CACHE_DIR": str(state / "cache"), **(env or {})})
    return subprocess.Popen([str(INVOKE), *args], cwd=PROJECT_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def terminate_when(proc: subprocess.Popen, ready, timeout: float = 240) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the moment to cancel never came"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=120)


def assert_cancelled_cleanly(proc: subprocess.Popen, stderr: str, tmp_path: Path, report: Path) -> None:
    assert proc.returncode == 143, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "cancelled (SIGTERM)" in last and "Traceback" not in stderr, stderr
    assert json.loads(report.read_text())["error"] == last.removeprefix("error: ")
    assert mounts_under(tmp_path) == [], mounts_under(tmp_path)
    deadline = time.monotonic() + 10  # daemons stop on SIGTERM from our clean-up; give them a moment
    while processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_mentioning(str(tmp_path)) == []
    work = tmp_path / "state" / "work"
    assert not work.exists() or not any(work.iterdir()), list(work.iterdir())


def test_sigterm_during_the_offline_refresh_leaves_nothing(media, tmp_path):
    disk, sha = media.disk("w10")
    iso, iso_sha = media.iso("0.1.240")
    path = tmp_path / "refresh.yaml"
    path.write_text(yaml.safe_dump({
        "name": "Windows 10 [{{ release_date }}]",
        "family": {"os_distro": "windows", "os_distro_major": "w10entx64", "os_edition": "DESKTOP", "architecture": "x86_64"},
        "os": {"type": "windows", "version": "10"}, "source": {"path": str(disk), "sha256": sha, "format": "raw"},
        "image": {"visibility": "private"}, "properties": {"hw_disk_bus": "virtio"},
        "bake": {"virtio_win": {"path": str(iso), "sha256": iso_sha}}}))
    report, out = tmp_path / "report.json", tmp_path / "artifact"
    proc = start(["bake", "--manifest", str(path), "--out", str(out), "--release-date", "2026-11-01", "--json", str(report)],
                 tmp_path / "state")
    _, stderr = terminate_when(proc, lambda: any("lowntfs-3g" in line or "fuse" in line for line in mounts_under(tmp_path)))
    assert_cancelled_cleanly(proc, stderr, tmp_path, report)
    assert not out.exists() or not any(out.iterdir())


def test_sigterm_mid_upload_deletes_the_partial_image(glance_server, tmp_path):
    from pipeline.glance.connect import connect_local
    from tests.conftest import project_images

    image = tmp_path / "big.raw"
    manifest = write_manifest(tmp_path, image, make_image(image, 64 * MiB, seed="cancel", sparse_tail=960 * MiB),
                              family={"os_distro_major": f"w10cancel{os.getpid()}"})
    target = connect_local(glance_server, start=False)
    before = {i["id"] for i in project_images(target)}
    report = tmp_path / "report.json"
    proc = start(["build-and-publish", "--manifest", str(manifest), "--release-date", "2026-11-01", "--json", str(report)],
                 tmp_path / "state", env={"BAKERY_STATE_DIR": str(glance_server.root.parent), "BAKERY_GLANCE_PORT": str(glance_server.port)})
    uploading = lambda: any(i.get("bakery_state") == "uploading" or i.get("status") == "saving"  # noqa: E731
                            for i in project_images(target) if i["id"] not in before)
    _, stderr = terminate_when(proc, uploading)
    assert proc.returncode == 143 and "cancelled (SIGTERM)" in stderr.strip().splitlines()[-1], stderr
    assert {i["id"] for i in project_images(target)} == before, "the partial image was left in Glance"
    assert processes_mentioning(str(tmp_path)) == []


@pytest.mark.slow
def test_sigterm_during_provisioning_stops_the_vm_and_leaves_nothing(bootable, tmp_path):
    import hashlib

    script = "echo working\nsleep 600\n"
    step = tmp_path / "slow.ps1"
    step.write_text(script)
    disk, sha = bootable("w10")
    path = tmp_path / "provision.yaml"
    path.write_text(yaml.safe_dump({
        "name": "Windows 10 [{{ release_date }}]",
        "family": {"os_distro": "windows", "os_distro_major": "w10entx64", "os_edition": "DESKTOP", "architecture": "x86_64"},
        "os": {"type": "windows", "version": "10"}, "source": {"path": str(disk), "sha256": sha, "format": "raw"},
        "image": {"visibility": "private"}, "properties": {"hw_disk_bus": "sata"},
        "provision": {"steps": [{"name": "slow", "powershell": {"path": str(step), "sha256": hashlib.sha256(script.encode()).hexdigest()}}],
                      "memory_mib": 512, "cpus": 1, "timeout_minutes": 8, "tcg_timeout_factor": 1}}))
    report = tmp_path / "report.json"
    proc = start(["bake", "--manifest", str(path), "--out", str(tmp_path / "artifact"), "--release-date", "2026-11-01",
                  "--json", str(report)], tmp_path / "state")
    _, stderr = terminate_when(proc, lambda: bool(processes_mentioning("bakery-provision")) or any(
        "qemu-system" in p for p in processes_mentioning(str(tmp_path))))
    assert_cancelled_cleanly(proc, stderr, tmp_path, report)
