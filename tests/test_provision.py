"""Provisioning under real QEMU (TCG here): the stand-in "Windows" plays the runner's contract.

It boots from the image's own disk (SATA: in-box on every Windows), finds the launcher the bakery planted
offline and the plan on the config media, runs each step (the stand-in's steps are sh-compatible scripts),
writes their logs and exit codes to ProgramData\\bakery\\provision on the NTFS volume, reboots when a step
asks and ends with "sysprep". The host reads the results offline; everything but the guest is production code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from pipeline import chain
from pipeline.common.errors import BakeryError
from pipeline.common.report import Report
from tests.conftest import processes_mentioning, project_images
from tests.windows_reader import OfflineWindows


def pinned(path: Path, text: str) -> dict:
    path.write_text(text)
    return {"path": str(path), "sha256": hashlib.sha256(text.encode()).hexdigest()}


def manifest(tmp_path: Path, disk, steps: list[dict], **provision) -> Path:
    document = {
        "name": "Windows w10 provisioned [{{ release_date }}]",
        "family": {"os_distro": "windows", "architecture": "x86_64", "os_distro_major": "w10entx64", "os_edition": "DESKTOP"},
        "os": {"type": "windows", "version": "10"},
        "source": {"path": str(disk[0]), "sha256": disk[1], "format": "raw"},
        "image": {"visibility": "private"},
        "properties": {"hw_disk_bus": "sata", "hw_machine_type": "q35"},
        "provision": {"steps": steps, "memory_mib": 512, "cpus": 1, "timeout_minutes": 4, "tcg_timeout_factor": 1, **provision},
    }
    path = tmp_path / "provision.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.mark.slow
def test_steps_run_in_order_with_a_reboot_and_their_results_come_back_offline(bootable, media, target, tmp_path):
    virtio = media.iso("0.1.240")
    steps = [
        {"name": "install-app", "powershell": pinned(tmp_path / "app.ps1", "echo installing the app\nexit 3010\n")},
        {"name": "site-config", "cmd": pinned(tmp_path / "site.cmd", "echo site settings applied\n"), "reboot": True},
        {"name": "agent", "msi": pinned(tmp_path / "agent.msi", "not really an msi\n"), "arguments": "ADDLOCAL=ALL"},
    ]
    cloudbase = {"msi": pinned(tmp_path / "cbi.msi", "cloudbase-init installer\n"),
                 "config": pinned(tmp_path / "cbi.conf", "[DEFAULT]\nusername=Admin\n")}
    path = manifest(tmp_path, bootable("w10"), steps, cloudbase_init=cloudbase, windows_update={"max_rounds": 1, "exclude_kbs": ["KB5034441"]})

    report = chain.build_and_publish(chain.JobOptions(path, release_date="2026-11-01"), Report("t"), target=target)

    provision = report.details["provision"]
    assert [(s["name"], s["exit_code"]) for s in provision["steps"]] == \
        [("windows-update-1", 0), ("install-app", 3010), ("site-config", 0), ("agent", 0), ("cloudbase-init", 0)]
    assert provision["steps"][1]["log_tail"] == "installing the app" and provision["finished"] is True
    assert provision["vm"]["reboots"] == 3  # after the update round, after 3010, after the step that asked for one
    assert (Path(provision["logs"]) / "03-site-config.log").read_text().strip() == "site settings applied"
    command = provision["vm"]["command"]
    assert "user,id=net0" in command and "ide-hd,drive=disk0,bus=ide.0,bootindex=1" in command  # updates need a way out
    assert report.image["id"] and processes_mentioning(provision["logs"]) == []
    # what ships: the steps' work, and none of the runner's traces (read back with an independent reader)
    windows = OfflineWindows(Path(report.built["path"]))
    try:
        assert windows.exists("Program Files/agent/agent.msi")
        assert windows.read("Program Files/Cloudbase Solutions/Cloudbase-Init/conf/cloudbase-init.conf").startswith(b"[DEFAULT]")
        assert not windows.exists("Windows/Setup/Scripts/bakery-provision.cmd") and not windows.exists("ProgramData/bakery/provision")
        software = windows.hive("SOFTWARE")
        startup = r"Microsoft\Windows\CurrentVersion\Group Policy\Scripts\Startup"
        scripts = [software.values(rf"{startup}\{gpo}\{n}").get("Script", "") for gpo in software.subkeys(startup)
                   for n in software.subkeys(rf"{startup}\{gpo}")] if software.has(startup) else []
        assert not [s for s in scripts if "bakery-provision" in s.lower()], scripts
    finally:
        windows.close()

    # a new refresh on top (a bake: section) changes the build, not the provisioning: nothing boots again
    document = yaml.safe_load(path.read_text())
    document["bake"] = {"virtio_win": {"path": str(virtio[0]), "sha256": virtio[1]}}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    again = chain.bake(chain.JobOptions(path, release_date="2026-11-01"), Report("t"), out=tmp_path / "artifact")
    assert again.details["cache"] == {"build": "miss", "provision": "hit"} and again.details["provision"]["cached"] is True
    assert again.details["stages"]["provision"] == report.details["stages"]["provision"]
    assert again.details["stages"]["build"] != report.details["stages"]["build"]


@pytest.mark.slow
def test_a_failing_step_fails_the_build_in_one_line_and_publishes_nothing(bootable, target, tmp_path):
    steps = [{"name": "ok-step", "powershell": pinned(tmp_path / "ok.ps1", "echo fine\n")},
             {"name": "broken", "powershell": pinned(tmp_path / "broken.ps1", "echo the installer could not find its license\nexit 3\n")},
             {"name": "never", "powershell": pinned(tmp_path / "never.ps1", "echo never\n")}]
    previous = chain.build_and_publish(chain.JobOptions(manifest(tmp_path, bootable("w10"), steps[:1]), release_date="2026-10-01"),
                                       Report("t"), target=target)
    report = Report("t")
    with pytest.raises(BakeryError) as failure:
        chain.build_and_publish(chain.JobOptions(manifest(tmp_path, bootable("w10"), steps), release_date="2026-11-01"),
                                report, target=target)
    message = failure.value.one_line()
    assert "provision: step 2 'broken' (powershell) exited 3: the installer could not find its license" in message
    assert "\n" not in message
    assert [image["id"] for image in project_images(target)] == [previous.image["id"]]
    assert target.glance.images.get(previous.image["id"])["recommended"] == "true"
    assert [s["exit_code"] for s in report.details["provision"]["steps"]] == [0, 3, None]


@pytest.mark.slow
def test_a_hanging_step_times_out_naming_it(bootable, target, tmp_path):
    steps = [{"name": "quick", "powershell": pinned(tmp_path / "quick.ps1", "echo quick\n")},
             {"name": "stuck-installer", "powershell": pinned(tmp_path / "stuck.ps1", "echo waiting for a dialog nobody sees\nsleep 3600\n")}]
    report = Report("t")
    with pytest.raises(BakeryError) as failure:
        chain.build_and_publish(chain.JobOptions(manifest(tmp_path, bootable("w10"), steps, timeout_minutes=0.5),
                                                 release_date="2026-11-01"), report, target=target)
    message = failure.value.one_line()
    assert "provision: step 2 'stuck-installer' was running: the guest did not power off within 0.5 min" in message, message
    assert report.details["provision"]["vm"]["screenshot"] and project_images(target) == []
    assert processes_mentioning(report.details["provision"]["logs"]) == []


@pytest.mark.slow
def test_a_reboot_loop_is_stopped_at_the_limit(bootable, target, tmp_path):
    steps = [{"name": "updates", "powershell": pinned(tmp_path / "loop.ps1", "echo one more reboot\nexit 3010\n"), "repeat": True}]
    report = Report("t")
    with pytest.raises(BakeryError) as failure:
        chain.build_and_publish(chain.JobOptions(manifest(tmp_path, bootable("w10"), steps, max_reboots=2), release_date="2026-11-01"),
                                report, target=target)
    message = failure.value.one_line()
    assert "rebooted more than 2 times (a reboot loop)" in message and "provision:" in message
    assert report.details["provision"]["vm"]["outcome"] == "reboot-loop" and project_images(target) == []
    assert processes_mentioning(report.details["provision"]["logs"]) == []


def test_provision_steps_are_validated_in_one_line(tmp_path, bootable):
    from pipeline.common.errors import ManifestError
    from pipeline.manifest import load_manifest

    script = pinned(tmp_path / "a.ps1", "echo a\n")
    bad = manifest(tmp_path, bootable("w10"), [{"name": "two kinds", "powershell": script, "cmd": script}])
    with pytest.raises(ManifestError, match=r"provision\.steps\.0: expected exactly one of powershell, cmd, msi, exe, msu"):
        load_manifest(bad, release_date="2026-11-01")
    bad = manifest(tmp_path, bootable("w10"), [], windows_update={"exclude_kbs": ["5034441"]})
    with pytest.raises(ManifestError, match=r"provision\.windows_update\.exclude_kbs\.0: expected a KB number"):
        load_manifest(bad, release_date="2026-11-01")


def test_unregister_takes_out_one_startup_script_and_keeps_the_others(tmp_path):
    pytest.importorskip("hivex")
    from pipeline.windows import startup_scripts
    from pipeline.windows.registry import Hive, empty_hive

    root = tmp_path / "C"
    hive = tmp_path / "SOFTWARE"
    empty_hive(hive, root_name="CMI-CreateHive{SOFTWARE}")

    def windows_path(relative: str) -> Path:
        return root / relative.replace("\\", "/")

    scripts = [r"C:\Windows\first.cmd", r"C:\Windows\Setup\Scripts\bakery-provision.cmd", r"C:\Windows\last.cmd"]
    with Hive(hive, write=True) as software:
        for script in scripts:
            startup_scripts.register(windows_path, software, startup_scripts.StartupScript(script, "-x"))
    version_before = (root / "Windows/System32/GroupPolicy/gpt.ini").read_bytes()
    with Hive(hive, write=True) as software:
        startup_scripts.unregister(windows_path, software, scripts[1].upper())
    with Hive(hive) as software:
        assert startup_scripts.registered(windows_path, software) == [scripts[0], scripts[2]]
        for key in startup_scripts.STARTUP_KEYS:
            gpo = software.subkeys(key)[0]
            assert sorted(software.subkeys(rf"{key}\{gpo}")) == ["0", "1"]
            assert software.get(rf"{key}\{gpo}\1", "Script") == scripts[2] and software.get(rf"{key}\{gpo}\1", "Parameters") == "-x"
    ini = (root / "Windows/System32/GroupPolicy/Machine/Scripts/scripts.ini").read_bytes().decode("utf-16")
    assert "0CmdLine=C:\\Windows\\first.cmd" in ini and "1CmdLine=C:\\Windows\\last.cmd" in ini and "bakery" not in ini
    assert (root / "Windows/System32/GroupPolicy/gpt.ini").read_bytes() != version_before  # the client sees a change


@pytest.mark.slow
def test_a_new_release_from_media_is_installed_provisioned_refreshed_proven_and_published(media, bootable_install_media, target, tmp_path):
    """The whole chain of a new Windows release: Setup, the steps inside the guest, the offline refresh, the
    canary on the machine the properties describe, then Glance."""
    from tests.test_install import install_manifest

    path = install_manifest(tmp_path, media, bootable_install_media, reboots=1)
    document = yaml.safe_load(path.read_text())
    document["provision"] = {"steps": [{"name": "app", "powershell": pinned(tmp_path / "app.ps1", "echo app installed\n")}],
                             "memory_mib": 512, "cpus": 1, "timeout_minutes": 4, "tcg_timeout_factor": 1}
    document["canary"] = {"ready": "guest-agent", "memory_mib": 512, "cpus": 1, "timeout_minutes": 3, "tcg_timeout_factor": 1}
    path.write_text(yaml.safe_dump(document, sort_keys=False))

    report = chain.build_and_publish(chain.JobOptions(path, release_date="2026-11-01"), Report("t"), target=target)

    details = report.details
    assert details["install"]["vm"]["outcome"] == "powered-off"
    assert [(s["name"], s["exit_code"]) for s in details["provision"]["steps"]] == [("app", 0)]
    assert details["canary"]["hardware"]["disk_bus"] == "virtio-blk"  # what the refresh made bootable
    assert list(details["stages"]) == ["install", "provision", "build", "measure"] and all(details["stages"].values())
    props = report.image["properties"]
    assert props["bakery_canary"].startswith("ok ") and props["hw_disk_bus"] == "virtio" and props["os_type"] == "windows"


def test_the_lock_pins_every_step_and_the_runner(tmp_path, bootable):
    from pipeline.manifest import load_manifest
    from pipeline.repro import lock

    steps = [{"name": "app", "msi": pinned(tmp_path / "app.msi", "an installer\n")}]
    cloudbase = {"msi": pinned(tmp_path / "cbi.msi", "cbi\n"), "config": pinned(tmp_path / "cbi.conf", "[DEFAULT]\n")}
    found = lock.pins(load_manifest(manifest(tmp_path, bootable("w10"), steps, cloudbase_init=cloudbase), release_date="2026-11-01"))
    assert found["provision.steps.0.msi"] == steps[0]["msi"]["sha256"]
    assert found["provision.cloudbase_init.config"] == cloudbase["config"]["sha256"]
    assert found["templates/provision/runner.ps1"] == hashlib.sha256(Path("templates/provision/runner.ps1").read_bytes()).hexdigest()


SECRET_PRINTED = "LICENSE-KEY-7f3c9e21-PRINTED-BY-A-STEP"
GPO = r"Microsoft\Windows\CurrentVersion\Group Policy"


def policy_state(image: Path) -> dict:
    """The local policy as an independent reader (dissect.ntfs, regipy) sees it."""
    windows = OfflineWindows(image)
    try:
        files = {name: windows.read(name) if windows.exists(name) else None
                 for name in ("Windows/System32/GroupPolicy/gpt.ini", "Windows/System32/GroupPolicy/Machine/Scripts/scripts.ini")}
        software = windows.hive("SOFTWARE")
        keys = {key: software.has(key) for key in (rf"{GPO}\Scripts", rf"{GPO}\Scripts\Startup", rf"{GPO}\State\Machine\Scripts")}
        folders = {name: windows.exists(name) for name in ("ProgramData/bakery", "Windows/Setup/Scripts", "Windows/System32/GroupPolicy")}
        return {"files": files, "keys": keys, "folders": folders}
    finally:
        windows.close()


def undeletable(image: Path, tmp_path: Path) -> str:
    """What ntfsundelete (ntfs-3g's own forensic tool) lists on the Windows partition of a raw image."""
    import shutil
    import subprocess

    from tests.windows_reader import partitions

    if shutil.which("ntfsundelete") is None:
        pytest.skip("ntfsundelete (ntfs-3g) is missing")
    outputs = []
    for start, size in partitions(image)[1]:
        part = tmp_path / f"part-{start}.ntfs"
        with open(image, "rb") as source, open(part, "wb") as target:
            source.seek(start)
            target.write(source.read(size))
        if part.read_bytes()[3:11] == b"NTFS    ":
            outputs.append(subprocess.run(["ntfsundelete", "--scan", "--percentage", "1", part], capture_output=True, text=True).stdout)
        part.unlink()
    return "\n".join(outputs)


@pytest.mark.slow
def test_provisioning_leaves_nothing_a_forensic_reader_finds(bootable, tmp_path):
    """What a step printed, the runner's files and its policy entries: not in the image, not recoverable, not in
    free registry cells; the local policy is the source's, byte for byte."""
    disk = bootable("w10")
    before = policy_state(disk[0])
    steps = [{"name": "print-key", "powershell": pinned(tmp_path / "key.ps1", f"echo {SECRET_PRINTED}\n")},
             {"name": "second", "cmd": pinned(tmp_path / "second.cmd", "echo second step\n"), "reboot": True}]
    path = manifest(tmp_path, disk, steps)

    chain.bake(chain.JobOptions(path, release_date="2026-11-01"), Report("t"), out=tmp_path / "artifact")

    image = tmp_path / "artifact" / "image.raw"
    assert policy_state(image) == before
    data = image.read_bytes()
    for needle in (SECRET_PRINTED, "bakery-provision.cmd", "01-print-key", "02-second", "runner.ps1 -Media"):
        for encoded in (needle.encode(), needle.encode("utf-16-le")):
            assert encoded not in data, f"{needle!r} ({'utf-16' if len(encoded) > len(needle) else 'ascii'}) is still in the image"
    listed = undeletable(image, tmp_path)
    assert "potentially recoverable content: 0" in listed, listed
    assert not any(name in listed for name in ("print-key", "second", "finished", "sysprep.log", "bakery-provision")), listed
