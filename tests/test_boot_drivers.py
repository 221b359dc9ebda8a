"""A driver file is not a driver: a boot driver counts only as Windows reads it, from the registry of the
control set that boots (a boot-start kernel service in its load-order group, an ImagePath that is a PE image of
the image's architecture, the controller's PCI ids mapped to it), and this is judged for every image, baked or
published as it is, in plan and lint before anything is built."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.common.digests import sha256_file
from pipeline.synthetic.virtio_iso import pe_stub
from pipeline.windows.drivers import DRIVERS
from pipeline.windows.inspection import inspect_image, windows_volume
from pipeline.windows.registry import REG_BINARY, REG_DWORD, REG_EXPAND_SZ, REG_MULTI_SZ, REG_SZ, Hive, boot_control_set
from tests.conftest import run_invoke

VIOSTOR = DRIVERS["viostor"]
AMD64, X86 = 0x8664, 0x014C


def edited(media, tmp_path: Path, *, sys_bytes: bytes | None, service: dict | None, mapped: bool) -> Path:
    """A copy of the unbaked synthetic Windows 10 disk with viostor made to look installed, as far as asked."""
    source, _ = media.disk("w10")
    disk = tmp_path / "w10-edited.raw"
    shutil.copyfile(source, disk)
    with windows_volume(disk, "raw", tmp_path / "edit", writable=True) as found:
        if sys_bytes is not None:
            found.path(r"Windows\System32\drivers\viostor.sys").write_bytes(sys_bytes)
        with Hive(found.system_hive, write=True) as system:
            control_set = boot_control_set(system)
            if service is not None:
                system.set_many(rf"{control_set}\Services\viostor", service)
            if mapped:
                system.set(r"DriverDatabase\DriverInfFiles\oem9.inf", "", ["viostor.inf_amd64_0000000000000009"], REG_MULTI_SZ)
                for hardware_id in VIOSTOR.hardware_ids:
                    system.set(rf"DriverDatabase\DeviceIds\{hardware_id}", "oem9.inf", b"\x01\xff\x00\x00", REG_BINARY)
    return disk


BOOT_SERVICE = {"Type": (1, REG_DWORD), "Start": (0, REG_DWORD), "ErrorControl": (1, REG_DWORD), "Group": ("SCSI miniport", REG_SZ),
                "ImagePath": (r"System32\drivers\viostor.sys", REG_EXPAND_SZ)}
DRIVER = pe_stub(AMD64, b"a driver")


@pytest.mark.parametrize("sys_bytes, service, mapped, bootable, why", [
    (b"MZ not a driver", None, False, False, None),  # the report's case: a file, no service, no mapping
    (DRIVER, None, True, False, None),
    (b"MZ not a driver", BOOT_SERVICE, True, False, "not a PE image"),
    (pe_stub(X86, b"x86 build"), BOOT_SERVICE, True, False, "a X86 image on AMD64 Windows"),
    (DRIVER, {**BOOT_SERVICE, "Start": (3, REG_DWORD)}, True, False, ""),
    (DRIVER, {**BOOT_SERVICE, "Type": (2, REG_DWORD)}, True, False, ""),
    (DRIVER, {k: v for k, v in BOOT_SERVICE.items() if k != "Group"}, True, False, ""),
    (DRIVER, {**BOOT_SERVICE, "ImagePath": (r"\SystemRoot\System32\drivers\nothere.sys", REG_EXPAND_SZ)}, True, False, "no such file"),
    (DRIVER, BOOT_SERVICE, False, False, ""),
    (DRIVER, BOOT_SERVICE, True, True, ""),
    (DRIVER, {**BOOT_SERVICE, "ImagePath": (r"\SystemRoot\System32\drivers\viostor.sys", REG_EXPAND_SZ)}, True, True, ""),
], ids=["file-only", "mapped-no-service", "fake-pe", "wrong-arch", "demand-start", "not-kernel", "no-group", "image-path-missing",
        "no-device-mapping", "complete", "systemroot-path"])
def test_a_boot_driver_is_what_windows_reads(media, tmp_path, sys_bytes, service, mapped, bootable, why):
    facts = inspect_image(edited(media, tmp_path, sys_bytes=sys_bytes, service=service, mapped=mapped), workdir=tmp_path / "inspect")
    state = facts.drivers["viostor"]
    assert state.bootable is bootable, state
    if why:
        assert why in state.image_file


def manifest(tmp_path: Path, disk: Path, bus: str) -> Path:
    document = {
        "name": "Windows 10 [{{ release_date }}]",
        "family": {"os_distro": "windows", "os_distro_major": "w10entx64", "os_edition": "DESKTOP", "architecture": "x86_64"},
        "os": {"type": "windows", "version": "10"},
        "source": {"path": str(disk), "sha256": sha256_file(disk), "format": "raw"},
        "image": {"visibility": "private"},
        "properties": {"hw_disk_bus": bus},
    }
    path = tmp_path / f"{bus}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize("command", ["lint", "plan", "build-and-publish"])
def test_an_unbaked_image_with_a_fake_viostor_is_refused_before_anything(media, tmp_path, command):
    disk = edited(media, tmp_path, sys_bytes=b"MZ not a driver", service=None, mapped=False)
    report = tmp_path / "report.json"
    proc = run_invoke(command, "--manifest", str(manifest(tmp_path, disk, "virtio")), "--release-date", "2026-11-01",
                      "--json", str(report), state=tmp_path / "state", env={"BAKERY_GLANCE_PORT": "1"})
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "device-needs-driver" in line and "properties.hw_disk_bus" in line and "viostor" in line, proc.stderr
    assert json.loads(report.read_text())["ok"] is False
    assert not (tmp_path / "state" / "glance").exists(), "refused before any cloud was asked (port 1 is bindable as root)"


def test_the_same_image_on_sata_passes_lint(media, tmp_path):
    disk = edited(media, tmp_path, sys_bytes=b"MZ not a driver", service=None, mapped=False)
    proc = run_invoke("lint", "--manifest", str(manifest(tmp_path, disk, "sata")), "--release-date", "2026-11-01", state=tmp_path / "state")
    assert proc.returncode == 0, proc.stderr


GLANCE_PROPERTIES = {"os_distro": "windows", "os_type": "windows", "os_distro_major": "w10entx64", "os_edition": "DESKTOP",
                     "architecture": "x86_64", "release_date": "2026-11-01", "hw_disk_bus": "virtio"}


def test_lint_image_reads_the_registry_of_an_image_someone_else_published(media, tmp_path, target):
    """The report's case, published by someone else: the properties alone are a good set, the bytes are not."""
    from pipeline.chain import lint_glance
    from pipeline.common.errors import LintFailed
    from pipeline.common.report import Report

    disk = edited(media, tmp_path, sys_bytes=b"MZ not a driver", service=None, mapped=False)
    image = target.glance.images.create(name="someone's w10", disk_format="raw", container_format="bare", visibility="private",
                                        min_disk=1, **GLANCE_PROPERTIES)
    with disk.open("rb") as data:
        target.glance.images.upload(image["id"], data)
    assert lint_glance(target, image["id"], Report("lint"), inspect=False, workdir=tmp_path / "inspect").ok
    with pytest.raises(LintFailed) as caught:
        lint_glance(target, image["id"], Report("lint"), inspect=True, workdir=tmp_path / "inspect")
    assert [f.rule for f in caught.value.findings if f.severity == "error"] == ["device-needs-driver"]
    assert "viostor" in caught.value.findings[0].message or any("viostor" in f.message for f in caught.value.findings)
    assert not list((tmp_path / "inspect").iterdir())  # the downloaded copy went with the call
