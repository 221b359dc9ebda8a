"""Real-world fidelity: hives as Windows leaves them (dirty, with logs, several control sets), what a real
pnputil and a real virt-v2v leave behind, 32-bit Windows, and fixtures real tools (libguestfs) accept."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pipeline import chain
from pipeline.build.bake import refresh as bake_stage
from pipeline.common.errors import BakeryError, LintFailed
from pipeline.common.report import Report
from pipeline.properties import lint
from pipeline.synthetic import virtio_iso
from pipeline.synthetic.windows_disk import RELEASES
from pipeline.windows.drivers import DRIVERS, SCSI_ADAPTER_CLASS
from pipeline.windows.inspection import inspect_image, windows_volume
from pipeline.windows.registry import (
    REG_DWORD,
    REG_EXPAND_SZ,
    REG_SZ,
    Hive,
    boot_control_set,
    empty_hive,
    filetime,
    hive_state,
    pin_timestamps,
    selected_control_sets,
    timestamps,
)
from tests import hive_log
from tests.conftest import PROJECT_ROOT, write_manifest
from tests.test_bake import spec
from tests.test_cli import invoke
from tests.windows_reader import OfflineWindows

SYSTEM = "Windows/System32/config/SYSTEM"


def copy_disk(media, generation: str, tmp_path: Path) -> Path:
    disk, _ = media.disk(generation)
    copy = tmp_path / f"{generation}.raw"
    subprocess.run(["cp", "--sparse=always", disk, copy], check=True)
    return copy


def edit_volume(disk: Path, tmp_path: Path):
    return windows_volume(disk, "raw", tmp_path / "edit-mnt", writable=True, label=str(disk))


def dword_offset(hive: Path, key: str, name: str) -> int:
    """Where a REG_DWORD's 4 bytes sit in the file: hivex handles are file offsets of the vk cell, whose
    data-offset field holds a DWORD inline (cell size 4, 'vk' 2, name length 2, data size 4, then the data)."""
    with Hive(hive) as opened:
        value = opened._h.node_get_value(opened.key(key), name)
    data = hive.read_bytes()
    assert data[value + 4:value + 6] == b"vk" and struct.unpack_from("<I", data, value + 8)[0] == 0x80000004
    return value + 12


# -- which control sets, and which one boots ------------------------------------------------------------------


def control_set_hive(path: Path, *, default: int, current: int, last_known_good: int) -> Path:
    empty_hive(path)
    with Hive(path, write=True) as system:
        system.set_many("Select", {"Default": (default, REG_DWORD), "Current": (current, REG_DWORD),
                                   "LastKnownGood": (last_known_good, REG_DWORD), "Failed": (0, REG_DWORD)})
        for number in {default, current, last_known_good}:
            system.set(rf"ControlSet{number:03d}\Control", "Marker", str(number))
    return path


def test_windows_boots_select_default_not_current(tmp_path):
    hive = control_set_hive(tmp_path / "SYSTEM", default=2, current=1, last_known_good=3)
    with Hive(hive) as system:
        assert boot_control_set(system) == "ControlSet002"
        assert selected_control_sets(system) == ("ControlSet002", "ControlSet001", "ControlSet003")


def test_a_select_value_naming_a_missing_control_set_is_a_one_line_error(tmp_path):
    hive = control_set_hive(tmp_path / "SYSTEM", default=1, current=1, last_known_good=1)
    with Hive(hive, write=True) as system:
        system.set("Select", "Default", 7, REG_DWORD)
    with Hive(hive) as system, pytest.raises(BakeryError) as failure:
        boot_control_set(system)
    assert "Select\\Default does not name an existing control set" in failure.value.one_line()


def test_every_control_set_select_names_gets_the_boot_driver(media, tmp_path):
    """Windows 7 falls back to LastKnownGood after a failed boot: the fallback must find its disk too."""
    disk, _ = media.disk("w7-lkg")
    iso, _ = media.iso("0.1.173")
    result = bake_stage.bake(spec(iso), disk, iso, tmp_path / "work", build_epoch=0)
    reader = OfflineWindows(result.raw)
    try:
        system = reader.hive("SYSTEM")
        for control_set in ("ControlSet001", "ControlSet002"):
            assert system.values(rf"{control_set}\Services\viostor")["Start"] == 0
            for hwid in DRIVERS["viostor"].hardware_ids:
                assert system.values(rf"{control_set}\Control\CriticalDeviceDatabase\{hwid.lower().replace(chr(92), '#')}")["Service"] == "viostor"
    finally:
        reader.close()
    assert result.facts.windows.control_sets == ("ControlSet001", "ControlSet002")
    assert result.facts.drivers["viostor"].bootable

    with edit_volume(result.raw, tmp_path) as found, Hive(found.system_hive, write=True) as system:
        system.delete(r"ControlSet002\Services\viostor")
    facts = inspect_image(result.raw)
    assert facts.drivers["viostor"].missing_in_control_sets == ("ControlSet002",)
    assert not facts.drivers["viostor"].bootable
    findings = lint.lint({"hw_disk_bus": "virtio", "os_type": "windows"}, facts.lint_facts())
    assert "device-needs-driver" in {f.rule for f in findings if f.severity == "error"}


# -- dirty hives and their transaction logs -----------------------------------------------------------------


def test_a_clean_hive_reads_clean_and_unequal_sequence_numbers_do_not(tmp_path):
    hive = control_set_hive(tmp_path / "SYSTEM", default=1, current=1, last_known_good=1)
    assert hive_state(hive).clean
    _, secondary = hive_log.sequence_numbers(hive.read_bytes())
    hive.write_bytes(hive_log.interrupted_write(hive.read_bytes()))
    state = hive_state(hive)
    assert not state.clean and (state.primary_sequence, state.secondary_sequence) == (secondary + 1, secondary)


def logged_change(hive: Path, key: str, name: str, value: int, *, sequence_offset: int = 0) -> bytes:
    """A LOG1 whose one entry sets key\\name to value in a page of the hive, as Windows logs a lazy write."""
    clean = hive.read_bytes()
    changed = bytearray(clean)
    struct.pack_into("<I", changed, dword_offset(hive, key, name), value)
    _, secondary = hive_log.sequence_numbers(clean)
    pages = hive_log.dirty_pages(clean, bytes(changed))
    assert len(pages) == 1
    entry = hive_log.log_entry(secondary + sequence_offset, hive_log.hbins_size(clean), hive_log.flags(clean), pages)
    return hive_log.new_format_log(clean, [entry])


def test_log_entries_newer_than_the_hive_are_pending_and_older_ones_are_not(tmp_path):
    hive = control_set_hive(tmp_path / "SYSTEM", default=1, current=1, last_known_good=1)
    log = tmp_path / "SYSTEM.LOG1"
    log.write_bytes(logged_change(hive, "Select", "Default", 2, sequence_offset=-1))  # already in the hive
    assert hive_state(hive).clean
    log.write_bytes(logged_change(hive, "Select", "Default", 2))
    state = hive_state(hive)
    assert not state.clean and state.pending_logs == ("SYSTEM.LOG1",)


def test_the_constructed_log_holds_the_change_an_independent_replay_finds(tmp_path):
    """The fixture is what it claims: regipy's recovery, applied to the hive and our log, reads the new value
    (and hivex, reading the hive alone, the old one: the change exists only in the log)."""
    from regipy.recovery import apply_transaction_logs
    from regipy.registry import RegistryHive

    hive = control_set_hive(tmp_path / "SYSTEM", default=1, current=1, last_known_good=1)
    (tmp_path / "SYSTEM.LOG1").write_bytes(logged_change(hive, "Select", "Default", 2))
    restored = tmp_path / "restored"
    apply_transaction_logs(str(hive), str(tmp_path / "SYSTEM.LOG1"), restored_hive_path=str(restored))
    replayed = {v.name: v.value for v in RegistryHive(str(restored)).get_key(r"\Select").iter_values()}
    assert replayed["Default"] == 2
    with Hive(hive) as system:
        assert system.get("Select", "Default") == 1


def test_a_bake_refuses_a_dirty_hive_and_plan_refuses_it_first(media, tmp_path):
    disk = copy_disk(media, "w10", tmp_path)
    with edit_volume(disk, tmp_path) as found:
        system_hive = found.system_hive
        log = logged_change(system_hive, r"ControlSet001\Services\atapi", "Start", 4)  # the logs say: atapi disabled
        system_hive.with_name("SYSTEM.LOG1").write_bytes(log)
    facts = inspect_image(disk)
    assert facts.hives["SYSTEM"]["clean"] is False and facts.hives["SYSTEM"]["pending_logs"] == ["SYSTEM.LOG1"]
    assert facts.hives["SOFTWARE"]["clean"] is True

    iso, iso_sha = media.iso("0.1.240")
    with pytest.raises(BakeryError) as failure:
        bake_stage.bake(spec(iso), disk, iso, tmp_path / "work", build_epoch=0, label="source.path")
    line = failure.value.one_line()
    assert "source.path: the SYSTEM hive was not closed cleanly" in line and "SYSTEM.LOG1" in line
    assert "shut Windows down cleanly" in line and "\n" not in line

    import hashlib

    sha = hashlib.sha256(disk.read_bytes()).hexdigest()
    manifest = write_manifest(tmp_path, disk, sha, source={"path": str(disk), "sha256": sha, "format": "raw"},
                              bake={"virtio_win": {"path": str(iso), "sha256": iso_sha}})
    with pytest.raises(BakeryError) as planned:
        chain.lint_manifest(chain.JobOptions(manifest, release_date="2026-11-01"), Report("t"))
    assert "SYSTEM hive was not closed cleanly" in planned.value.one_line()


def test_inspect_reports_the_hive_state(media, tmp_path):
    disk = copy_disk(media, "w10", tmp_path)
    with edit_volume(disk, tmp_path) as found:
        found.system_hive.write_bytes(hive_log.interrupted_write(found.system_hive.read_bytes()))
    proc = invoke("inspect", str(disk), state=tmp_path / "state", port=1)
    assert proc.returncode == 0, proc.stderr
    assert "SYSTEM NOT clean" in proc.stdout and "SOFTWARE clean" in proc.stdout


# -- only what the bake changed ------------------------------------------------------------------------------


def test_pinning_leaves_every_stamp_the_build_did_not_write_byte_equal(tmp_path):
    hive = control_set_hive(tmp_path / "SYSTEM", default=1, current=1, last_known_good=1)
    data = bytearray(hive.read_bytes())
    struct.pack_into("<Q", data, 0x0C, 0)  # like real Windows 10 hives: zero stamps the build never touches
    hive.write_bytes(bytes(data))
    before = timestamps(hive)
    assert 0 in before.values()
    original = hive.read_bytes()
    with Hive(hive, write=True) as system:
        system.set(r"ControlSet001\Services\viostor", "Start", 0, REG_DWORD)
        system.set(r"ControlSet001\Services\viostor", "Group", "SCSI miniport", REG_SZ)
    edited = timestamps(hive)
    written = {offset for offset, stamp in edited.items() if before.get(offset) != stamp}
    assert written, "hivex wrote no stamp: the test proves nothing"
    epoch = 1_700_000_000
    assert pin_timestamps(hive, before=before, to=epoch) == len(written)
    pinned = timestamps(hive)
    for offset, stamp in before.items():
        if offset not in written:
            assert pinned[offset] == stamp, f"stamp at {offset:#x} was not ours and changed"
    assert all(pinned[offset] == filetime(epoch) for offset in written)
    result = hive.read_bytes()
    first_hbin = struct.unpack_from("<I", original, 4096 + 8)[0]
    untouched = [o for o in range(4096, 4096 + first_hbin, 8) if result[o:o + 8] == original[o:o + 8]]
    assert len(untouched) > first_hbin // 8 // 2  # most of the original hbin is byte-equal


# -- DriverDatabase as pnputil writes it ---------------------------------------------------------------------


def test_driver_database_package_carries_what_pnputil_writes(media, tmp_path):
    disk, _ = media.disk("w10")
    iso, _ = media.iso("0.1.240")
    epoch = 1_700_000_000
    result = bake_stage.bake(spec(iso), disk, iso, tmp_path / "work", build_epoch=epoch)
    reader = OfflineWindows(result.raw)
    try:
        system = reader.hive("SYSTEM")
        hwid = DRIVERS["viostor"].hardware_ids[0]
        oem_inf = next(iter(system.values(rf"DriverDatabase\DeviceIds\{hwid}")))
        package = system.values(rf"DriverDatabase\DriverInfFiles\{oem_inf}")["Active"]
        values = system.values(rf"DriverDatabase\DriverPackages\{package}")
        types = system.types(rf"DriverDatabase\DriverPackages\{package}")
        assert values["InfName"] == "viostor.inf" and values["Catalog"] == "viostor.cat"
        assert values["Provider"] == "Red Hat, Inc."
        version = bytes.fromhex(values["Version"])  # regipy shows binary values as hex
        assert types["Version"] == "REG_BINARY" and len(version) == 48
        assert version[:8] == b"\x00\xff\x09\x00\x00\x00\x00\x00"
        assert version[8:24] == uuid.UUID(SCSI_ADAPTER_CLASS.strip("{}")).bytes_le
        driver_version = virtio_iso.RELEASES["0.1.240"].driver_version
        packed = [int(p) for p in driver_version.split(".")]
        assert struct.unpack_from("<Q", version, 32)[0] == (packed[0] << 48) | (packed[1] << 32) | (packed[2] << 16) | packed[3]
        assert struct.unpack("<Q", bytes.fromhex(values["ImportDate"]))[0] == filetime(epoch)
        # the synthetic catalogs are not PKCS#7: ranked as a real virtio-win Windows 10 package is
        assert values["SignerScore"] == 0x0D000005 and "SignerName" not in values
        assert values["OemPath"] == r"C:\Windows\Drivers\VirtIO\viostor"
        strings = system.values(rf"DriverDatabase\DriverPackages\{package}\Strings")
        assert strings and all(isinstance(v, str) for v in strings.values())
        configuration = system.values(rf"DriverDatabase\DriverPackages\{package}\Configurations\{DRIVERS['viostor'].configuration}")
        assert configuration["ConfigFlags"] == 0 and configuration["Service"] == "viostor"
    finally:
        reader.close()


# -- 32-bit Windows ------------------------------------------------------------------------------------------


def test_32bit_windows7_gets_x86_drivers_the_i386_agent_and_architecture_i686(media, tmp_path):
    disk, _ = media.disk("w7-x86")
    iso, _ = media.iso("0.1.173")
    result = bake_stage.bake(spec(iso), disk, iso, tmp_path / "work", build_epoch=0)
    release = virtio_iso.RELEASES["0.1.173"]
    reader = OfflineWindows(result.raw)
    try:
        expected = virtio_iso.driver_files(release, DRIVERS["viostor"], "w7", "x86")["viostor.sys"]
        assert reader.read("Windows/System32/drivers/viostor.sys") == expected
        assert expected != virtio_iso.driver_files(release, DRIVERS["viostor"], "w7", "amd64")["viostor.sys"]
        staged = reader.listdir("Windows/Drivers/VirtIO/guest-agent")
        assert staged == ["qemu-ga-i386.msi"], staged
    finally:
        reader.close()
    assert result.facts.windows.arch == "X86" and result.facts.windows.architecture == "i686"


def w7_x86_manifest(tmp_path, media, architecture: str) -> Path:
    disk, disk_sha = media.disk("w7-x86", "qcow2")
    iso, iso_sha = media.iso("0.1.173")
    return write_manifest(
        tmp_path, disk, disk_sha,
        name="Windows 7 32-bit [{{ release_date }}]",
        family={"os_distro_major": "w7entx86", "architecture": architecture},
        os={"type": "windows", "version": "7"},
        source={"path": str(disk), "sha256": disk_sha, "format": "qcow2"},
        bake={"virtio_win": {"path": str(iso), "sha256": iso_sha}},
        properties={"hw_disk_bus": "virtio", "hw_firmware_type": "bios"},
    )


def test_32bit_windows7_declared_x86_64_is_refused_by_plan_before_any_bake(media, target, tmp_path):
    manifest = w7_x86_manifest(tmp_path, media, "x86_64")
    with pytest.raises(LintFailed) as failure:
        chain.plan(chain.JobOptions(manifest, release_date="2026-11-01"), Report("t"), target=target)
    messages = [f.message for f in failure.value.findings if f.rule == "architecture-matches-image"]
    assert messages and "X86" in messages[0] and "i686" in messages[0]


def test_32bit_windows7_end_to_end(media, target, tmp_path):
    manifest = w7_x86_manifest(tmp_path, media, "i686")
    planned = chain.plan(chain.JobOptions(manifest, release_date="2026-11-01"), Report("t"), target=target)
    assert planned.plan["properties"]["bakery_windows_build"] == "7601"  # identity facts, read without a bake
    published = chain.build_and_publish(chain.JobOptions(manifest, release_date="2026-11-01"), Report("t"), target=target)
    props = published.image["properties"]
    assert props["architecture"] == "i686" and props["os_type"] == "windows"
    assert published.built["facts"]["windows"]["architecture"] == "i686"
    assert published.built["facts"]["drivers"]["viostor"]["bootable"]


def test_architecture_rule_reads_nova_spellings():
    facts = {"windows": {"arch": "X86", "architecture": "i686", "os_version": "7", "server": False, "product_name": "Windows 7"}}
    assert not [f for f in lint.lint({"architecture": "i386"}, facts) if f.rule == "architecture-matches-image"]
    assert [f for f in lint.lint({"architecture": "x86_64"}, facts) if f.rule == "architecture-matches-image"]
    amd64 = {"windows": {**facts["windows"], "arch": "AMD64", "architecture": "x86_64"}}
    assert not [f for f in lint.lint({"architecture": "amd64"}, amd64) if f.rule == "architecture-matches-image"]


def test_windows_81_family_names_are_read_as_81():
    facts = {"windows": {"arch": "AMD64", "architecture": "x86_64", "os_version": "8.1", "server": False,
                         "product_name": "Windows 8.1 Enterprise", "build": 9600}}
    assert not [f for f in lint.lint({"os_distro_major": "w81entx64", "os_version": "8.1"}, facts) if f.rule == "version-matches-image"]
    assert [f for f in lint.lint({"os_distro_major": "w10entx64"}, facts) if f.rule == "version-matches-image"]


# -- first boot without a logon ------------------------------------------------------------------------------


@pytest.mark.parametrize("generation", ["w7", "w10", "2k22"])
def test_first_boot_runs_as_a_startup_script_without_a_logon(media, generation, tmp_path):
    disk, _ = media.disk(generation)
    iso, _ = media.iso("0.1.173" if generation == "w7" else "0.1.240")
    result = bake_stage.bake(spec(iso), disk, iso, tmp_path / "work", build_epoch=0)
    reader = OfflineWindows(result.raw)
    try:
        software = reader.hive("SOFTWARE")
        script = r"C:\Windows\Drivers\VirtIO\install-virtio-drivers.cmd"
        for key in (r"Microsoft\Windows\CurrentVersion\Group Policy\Scripts\Startup",
                    r"Microsoft\Windows\CurrentVersion\Group Policy\State\Machine\Scripts\Startup"):
            gpo = software.values(rf"{key}\0")
            assert gpo["GPO-ID"] == "LocalGPO" and gpo["FileSysPath"] == r"C:\Windows\System32\GroupPolicy\Machine"
            entry = software.values(rf"{key}\0\0")
            assert entry["Script"] == script and entry["IsPowershell"] == 0
        gpt = reader.read("Windows/System32/GroupPolicy/gpt.ini").decode("latin-1")
        assert "{42B5FAAE-6536-11D2-AE5A-0000F87571E3}{40B6664F-4972-11D1-A7CA-0000F87571E3}" in gpt and "Version=1" in gpt
        scripts = reader.read("Windows/System32/GroupPolicy/Machine/Scripts/scripts.ini")
        assert scripts.startswith(b"\xff\xfe")
        assert f"[Startup]\r\n0CmdLine={script}\r\n0Parameters=\r\n" in scripts.decode("utf-16")
    finally:
        reader.close()
    assert result.facts.firstboot_at_boot and result.facts.firstboot_hooks[0] == "startup-script"
    assert {"setupcomplete", "runonce"} <= set(result.facts.firstboot_hooks)


def test_existing_local_policy_is_merged_not_replaced(media, tmp_path):
    disk = copy_disk(media, "w10", tmp_path)
    theirs = r"C:\Scripts\site-startup.cmd"
    with edit_volume(disk, tmp_path) as found:
        policy = found.root / "Windows/System32/GroupPolicy"
        (policy / "Machine/Scripts").mkdir(parents=True)
        (policy / "gpt.ini").write_bytes(b"[General]\r\ngPCMachineExtensionNames=[{35378EAC-683F-11D2-A89A-00C04FBBCFA2}"
                                         b"{D02B1F72-3407-48AE-BA88-E8213C6761F1}]\r\nVersion=65539\r\n")
        (policy / "Machine/Scripts/scripts.ini").write_bytes(
            "\r\n[Startup]\r\n0CmdLine=C:\\Scripts\\site-startup.cmd\r\n0Parameters=/quiet\r\n".encode("utf-16"))
    iso, _ = media.iso("0.1.240")
    result = bake_stage.bake(spec(iso), disk, iso, tmp_path / "work", build_epoch=0)
    reader = OfflineWindows(result.raw)
    try:
        gpt = reader.read("Windows/System32/GroupPolicy/gpt.ini").decode("latin-1")
        assert "Version=65540" in gpt  # user half (1) kept, machine half 3 -> 4
        assert "{35378EAC-683F-11D2-A89A-00C04FBBCFA2}" in gpt and "{42B5FAAE-6536-11D2-AE5A-0000F87571E3}" in gpt
        scripts = reader.read("Windows/System32/GroupPolicy/Machine/Scripts/scripts.ini").decode("utf-16")
        assert f"0CmdLine={theirs}" in scripts and "0Parameters=/quiet" in scripts
        assert "1CmdLine=C:\\Windows\\Drivers\\VirtIO\\install-virtio-drivers.cmd" in scripts
    finally:
        reader.close()


# -- what other tools installed ------------------------------------------------------------------------------


def test_an_image_refreshed_by_virt_v2v_reads_as_what_it_is(media, tmp_path):
    """virt-v2v's layout: every package flat in Windows\\Drivers\\VirtIO, the boot driver's service and
    DriverDatabase entries, the first boot as a service under Program Files\\Guestfs\\Firstboot."""
    disk = copy_disk(media, "w10", tmp_path)
    release = virtio_iso.RELEASES["0.1.240"]
    with edit_volume(disk, tmp_path) as found:
        flat = found.root / "Windows/Drivers/VirtIO"
        flat.mkdir(parents=True)
        for name in ("viostor", "NetKVM"):
            for file_name, data in virtio_iso.driver_files(release, DRIVERS[name], "w10", "amd64").items():
                (flat / file_name).write_bytes(data)
        shutil.copyfile(flat / "viostor.sys", found.root / "Windows/System32/drivers/viostor.sys")
        firstboot = found.root / "Program Files/Guestfs/Firstboot"
        firstboot.mkdir(parents=True)
        (firstboot / "rhsrvany.exe").write_bytes(b"MZ service wrapper")
        (found.root / "qemu-ga-x86_64.msi").write_bytes(b"msi")  # virt-v2v copies the agent's MSI to C:\
        with Hive(found.system_hive, write=True) as system:  # the values virt-v2v writes (convert/windows_virtio.ml, windows.ml)
            system.set_many(r"ControlSet001\Services\viostor", {
                "Type": (1, REG_DWORD), "Start": (0, REG_DWORD), "Group": ("SCSI miniport", REG_SZ), "ErrorControl": (1, REG_DWORD),
                "ImagePath": (r"system32\drivers\viostor.sys", REG_EXPAND_SZ)})
            system.set_many(r"ControlSet001\Services\firstboot", {
                "Type": (0x10, REG_DWORD), "Start": (2, REG_DWORD), "ErrorControl": (1, REG_DWORD),
                "ImagePath": (r"C:\Program Files\Guestfs\Firstboot\rhsrvany.exe -s firstboot", REG_SZ),
                "DisplayName": ("Virt tools firstboot service", REG_SZ), "ObjectName": ("LocalSystem", REG_SZ)})
            system.set_many(r"ControlSet001\Services\cloudbase-init", {"Type": (0x10, REG_DWORD), "Start": (2, REG_DWORD)})
            package = "viostor.inf_amd64_0123456789abcdef"
            for hwid in DRIVERS["viostor"].hardware_ids:
                system.set(rf"DriverDatabase\DeviceIds\{hwid}", "oem1.inf", bytes([1, 0xFF, 0, 0]), 3)
            system.set(rf"DriverDatabase\DriverPackages\{package}", "Provider", "Red Hat, Inc.")
    facts = inspect_image(disk)
    assert facts.drivers["viostor"].bootable
    assert facts.drivers["NetKVM"].present and facts.drivers["NetKVM"].staged_version == release.driver_version
    assert facts.firstboot_by == "virt-v2v" and facts.firstboot_at_boot and "service" in facts.firstboot_hooks
    assert facts.firstboot_mechanisms == ("virt-v2v", "cloudbase-init")
    assert facts.guest_agent["staged"]
    findings = lint.lint({"hw_disk_bus": "virtio", "hw_vif_model": "virtio", "hw_qemu_guest_agent": "yes"}, facts.lint_facts())
    assert not [f for f in findings if f.rule in ("device-needs-driver", "guest-agent-missing")]


# -- damaged hives -------------------------------------------------------------------------------------------


def test_a_damaged_hive_is_one_line_and_nothing_else(tmp_path):
    damaged = tmp_path / "SYSTEM"
    damaged.write_bytes(b"regf" + bytes(600) + b"not a hive at all" * 100)
    code = ("import sys\nfrom pipeline.windows.registry import Hive\nfrom pipeline.common.errors import BakeryError\n"
            f"try:\n    Hive({str(damaged)!r})\nexcept BakeryError as e:\n    print(e.one_line())\n    sys.exit(1)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "not a readable registry hive" in proc.stdout
    assert proc.stderr == "", proc.stderr  # no AttributeError from the bindings' destructor


def test_inspect_of_a_disk_with_a_damaged_hive_prints_one_line(media, tmp_path):
    disk = copy_disk(media, "w10", tmp_path)
    with edit_volume(disk, tmp_path) as found:
        found.system_hive.write_bytes(b"regf" + bytes(600) + b"damaged" * 1000)
    proc = invoke("inspect", str(disk), state=tmp_path / "state", port=1)
    assert proc.returncode == 1
    assert "AttributeError" not in proc.stderr and "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("error: ")], proc.stderr


# -- fixtures real tools accept ------------------------------------------------------------------------------


def virt_inspector_missing() -> str | None:
    if not shutil.which("virt-inspector"):
        return "virt-inspector is not installed (apt-get install libguestfs-tools; CI installs it)"
    if not any(Path("/boot").glob("vmlinuz-*")):
        return "no kernel in /boot for the libguestfs appliance (apt-get install linux-image-amd64; CI installs it)"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("generation", ["w7", "w7-x86", "2k8r2", "w10", "2k19", "2k22", "w11"])
def test_libguestfs_inspection_accepts_every_fixture(media, generation):
    reason = virt_inspector_missing()
    if reason:
        pytest.skip(reason)
    disk, _ = media.disk(generation)
    env = {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": str(Path.home())}
    proc = subprocess.run(["virt-inspector", "--format=raw", "-a", str(disk)], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr
    system = ET.fromstring(proc.stdout).find("operatingsystem")
    release = RELEASES[generation]
    assert system.findtext("name") == "windows" and system.findtext("distro") == "windows"
    assert system.findtext("arch") == ("i386" if release.arch == "X86" else "x86_64")
    assert system.findtext("product_name") == release.product_name
    assert system.findtext("windows_current_control_set") == f"ControlSet{release.control_set:03d}"
    assert system.findtext("hostname") == "WIN-SYNTHETIC"
