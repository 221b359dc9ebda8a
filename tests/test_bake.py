"""The offline virtio refresh on every fixture generation, read back with independent readers."""

from __future__ import annotations

import hashlib

import pytest

from pipeline.build.bake import refresh as bake_stage
from pipeline.common.errors import BakeryError
from pipeline.manifest import BakeSpec, Source
from pipeline.synthetic import virtio_iso
from pipeline.synthetic.windows_disk import RELEASES
from pipeline.windows.drivers import DEFAULT_SELECTION, DRIVERS, os_directory
from pipeline.windows.inspection import inspect_image
from tests.windows_reader import OfflineWindows

GENERATIONS = ("w7", "2k8r2", "w10", "2k19", "2k22", "w11")
ISO_FOR = {"w7": "0.1.173", "2k8r2": "0.1.173"}  # current virtio-win no longer ships Windows 7 / 2008 R2 drivers


def spec(iso, **overrides) -> BakeSpec:
    values = {"virtio_win": Source(str(iso), "0" * 64, None, field="bake.virtio_win"), "drivers": DEFAULT_SELECTION,
              "elements": (), "elements_path": (), "qcow2": False}
    return BakeSpec(**{**values, **overrides})


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("generation", GENERATIONS)
def test_fixture_is_what_it_claims(media, generation):
    """Independent readers see the partition layout, the NTFS tree and the version facts."""
    disk, _ = media.disk(generation)
    release = RELEASES[generation]
    reader = OfflineWindows(disk)
    try:
        assert reader.label == ("gpt" if release.firmware == "uefi" else "dos")
        software = reader.hive("SOFTWARE").values(r"Microsoft\Windows NT\CurrentVersion")
        assert software["ProductName"] == release.product_name and software["CurrentBuildNumber"] == str(release.build)
        assert software["InstallationType"] == release.installation_type
        system = reader.hive("SYSTEM")
        assert system.current_control_set() == f"ControlSet{release.control_set:03d}"
        assert system.values(rf"{system.current_control_set()}\Control\Session Manager\Environment")["PROCESSOR_ARCHITECTURE"] == "AMD64"
        assert b"SYNTHETIC" in reader.read("SYNTHETIC.txt")
    finally:
        reader.close()


@pytest.mark.parametrize("generation", GENERATIONS)
def test_refresh_injects_boot_drivers_and_stages_the_rest(media, generation, tmp_path):
    disk, before = media.disk(generation)
    version = ISO_FOR.get(generation, "0.1.240")
    iso, _ = media.iso(version)
    result = bake_stage.bake(spec(iso), disk, iso, tmp_path / "work", build_epoch=0)
    assert sha256(disk) == before, "the source image was modified"

    release = RELEASES[generation]
    new = virtio_iso.RELEASES[version].driver_version
    os_dir = os_directory(release.major, release.minor, release.build, release.server)
    reader = OfflineWindows(result.raw)
    try:
        system, software = reader.hive("SYSTEM"), reader.hive("SOFTWARE")
        ccs = system.current_control_set()
        for name in ("viostor", "vioscsi"):
            service = system.values(rf"{ccs}\Services\{name}")
            assert (service["Start"], service["Type"], service["Group"]) == (0, 1, "SCSI miniport")
            assert service["ImagePath"] == rf"system32\drivers\{name}.sys"
            expected = virtio_iso.driver_files(virtio_iso.RELEASES[version], DRIVERS[name], os_dir, "amd64")
            assert reader.read(f"Windows/System32/drivers/{name}.sys") == expected[f"{name}.sys"]
            for hwid in DRIVERS[name].hardware_ids:
                if release.major < 10 and release.minor < 2:
                    cdd = system.values(rf"{ccs}\Control\CriticalDeviceDatabase\{hwid.lower().replace(chr(92), '#')}")
                    assert cdd["Service"] == name and cdd["ClassGUID"] == "{4D36E97B-E325-11CE-BFC1-08002BE10318}"
                else:
                    oem_inf = next(iter(system.values(rf"DriverDatabase\DeviceIds\{hwid}")))
                    package = system.values(rf"DriverDatabase\DriverInfFiles\{oem_inf}")["Active"]
                    configuration = DRIVERS[name].configuration
                    assert system.values(rf"DriverDatabase\DriverPackages\{package}\Configurations\{configuration}")["Service"] == name
                    assert reader.exists(f"Windows/System32/DriverStore/FileRepository/{package}/{name}.inf")
            if release.major < 10 and release.minor < 2:
                assert not system.has(r"DriverDatabase\DeviceIds")  # Windows 7 has no DriverDatabase
        for name in reader.listdir("Windows/Drivers/VirtIO"):
            if name in DRIVERS:
                inf = reader.read(f"Windows/Drivers/VirtIO/{name}/{DRIVERS[name].inf}.inf").decode()
                assert f",{new}" in inf
        staged = set(reader.listdir("Windows/Drivers/VirtIO"))
        assert {"viostor", "vioscsi", "NetKVM", "Balloon", "guest-agent", "install-virtio-drivers.cmd"} <= staged
        device_path = software.values(r"Microsoft\Windows\CurrentVersion")["DevicePath"]
        assert device_path.split(";")[-1] == r"%SystemRoot%\Drivers\VirtIO" and device_path.startswith(r"%SystemRoot%\inf")
        assert software.types(r"Microsoft\Windows\CurrentVersion")["DevicePath"] == "REG_EXPAND_SZ"
        script = reader.read("Windows/Drivers/VirtIO/install-virtio-drivers.cmd").decode()
        assert ("pnputil /add-driver" in script) == (release.build >= 14393)
        assert ("pnputil -i -a" in script) == (release.build < 14393)
        assert "install-virtio-drivers.cmd" in reader.read("Windows/Setup/Scripts/SetupComplete.cmd").decode()
        assert "install-virtio-drivers.cmd" in software.values(r"Microsoft\Windows\CurrentVersion\RunOnce")["BakeryVirtioDrivers"]
    finally:
        reader.close()
    assert result.facts.drivers["viostor"].bootable and result.facts.drivers["vioscsi"].bootable
    assert result.facts.windows.control_set == f"ControlSet{release.control_set:03d}"


def test_older_driver_set_is_replaced(media, tmp_path):
    disk, _ = media.disk("w10-oldvirtio")
    before = inspect_image(disk)
    old = virtio_iso.RELEASES["0.1.173"].driver_version
    assert before.drivers["viostor"].installed_versions == (old,) and before.drivers["viostor"].bootable
    iso, _ = media.iso("0.1.240")
    result = bake_stage.bake(spec(iso), disk, iso, tmp_path / "work", build_epoch=0)
    new = virtio_iso.RELEASES["0.1.240"].driver_version
    after = result.facts.drivers
    assert after["viostor"].newest == new and after["viostor"].staged_version == new
    assert after["NetKVM"].staged_version == new and after["NetKVM"].newest == new
    reader = OfflineWindows(result.raw)
    try:
        sys_file = reader.read("Windows/System32/drivers/viostor.sys")
        assert b"0.1.240" in sys_file and b"0.1.173" not in sys_file
        # the older package is still registered, the new one sits next to it: PnP ranks them by DriverVer
        assert len(reader.hive("SYSTEM").values(r"DriverDatabase\DeviceIds\PCI\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00")) == 2
    finally:
        reader.close()


def test_baking_twice_keeps_one_staging_entry(media, tmp_path):
    disk, _ = media.disk("2k22")
    iso, _ = media.iso("0.1.240")
    first = bake_stage.bake(spec(iso), disk, iso, tmp_path / "one", build_epoch=0)
    second = bake_stage.bake(spec(iso), first.raw, iso, tmp_path / "two", build_epoch=0)
    assert second.facts.device_path.lower().count("drivers\\virtio") == 1
    reader = OfflineWindows(second.raw)
    try:
        script = reader.read("Windows/Setup/Scripts/SetupComplete.cmd").decode()
        assert script.count("install-virtio-drivers.cmd") == 1
    finally:
        reader.close()


def test_windows7_with_a_current_iso_fails_clearly(media, tmp_path):
    disk, _ = media.disk("w7")
    iso, _ = media.iso("0.1.240")
    with pytest.raises(BakeryError) as failure:
        bake_stage.bake(spec(iso), disk, iso, tmp_path / "work", build_epoch=0)
    message = failure.value.one_line()
    assert "no drivers for Windows 7 Enterprise" in message and "w7" in message and "w10, 2k16, 2k19, 2k22, w11" in message
    assert not (tmp_path / "work").exists(), "a failed bake left its work directory behind"


def test_qcow2_source_and_qcow2_output(media, tmp_path):
    disk, _ = media.disk("w11", "qcow2")
    iso, _ = media.iso("0.1.240")
    result = bake_stage.bake(spec(iso, qcow2=True), disk, iso, tmp_path / "work", build_epoch=0)
    assert result.facts.windows.product_name == "Windows 11 Enterprise" and result.facts.firmware == "uefi"
    assert result.qcow2 and result.qcow2.is_file()  # bake() ran qemu-img check and compare on it


def test_a_virtio_win_directory_works_like_the_iso(media, tmp_path):
    disk, _ = media.disk("2k19")
    tree = virtio_iso.write_tree(tmp_path / "virtio-win-0.1.262", "0.1.262")
    result = bake_stage.bake(spec(tree), disk, tree, tmp_path / "work", build_epoch=0)
    assert result.virtio_win_version == "0.1.262"
    assert result.facts.drivers["viostor"].staged_version == virtio_iso.RELEASES["0.1.262"].driver_version


def test_two_elements_shipping_the_same_script_are_refused(tmp_path):
    from pipeline.build.bake import elements
    for name in ("site-a", "site-b"):
        phase = tmp_path / name / "install.d"
        phase.mkdir(parents=True)
        (phase / "50-same").write_text("#!/bin/bash\n")
        (tmp_path / name / "element-deps").write_text("windows-base\n")
    resolved = elements.resolve(("site-a", "site-b"), elements.search_path((str(tmp_path),)))
    with pytest.raises(BakeryError, match="elements site-a and site-b both ship install.d/50-same"):
        elements.merge_hooks(resolved, tmp_path / "hooks")


def test_an_unknown_element_is_a_one_line_error(tmp_path):
    from pipeline.build.bake import elements
    with pytest.raises(BakeryError) as failure:
        elements.resolve(("no-such-element",), elements.search_path())
    assert "no-such-element" in failure.value.one_line() and "\n" not in failure.value.one_line()


def test_directory_pin_matches_the_documented_shell_pipeline(tmp_path):
    import subprocess

    from pipeline.build.inputs import tree_sha256

    tree = virtio_iso.write_tree(tmp_path / "vw", "0.1.240")
    shell = subprocess.run(
        "cd vw && find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum",
        shell=True, cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()[0]
    assert tree_sha256(tree) == shell
