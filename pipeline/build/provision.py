"""Provisioning: the steps that only work on a running Windows, run in QEMU before the offline refresh.

The disk the chain starts from (a source image, or what Setup left) is copied into a work qcow2; a machine
startup script planted offline in the local Group Policy (windows/startup_scripts.py: runs as SYSTEM at
boot, no logon, no password) starts templates/provision/runner.ps1 from the config media. The runner reads
plan.tsv, runs each pinned step, writes its log and exit code to ProgramData\\bakery\\provision on C:,
reboots when a step asks (exit 3010, or reboot: true), and ends with sysprep, which powers the guest off.

Nothing comes back over a network: after the power-off the results are read from the NTFS volume with the
bakery's own volume code. A failed step, a reboot loop (more resets than max_reboots) or the time limit
fails the build in one line naming the step, with the serial log and a screenshot kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.build.vm import Drive, VmFailed, VmResult, VmSpec, run_vm, timeout_s
from pipeline.common.errors import BakeryError
from pipeline.common.isomedia import write_iso
from pipeline.common.progress import say
from pipeline.common.run import run
from pipeline.diskimage.safety import CheckedImage, qemu_img_input
from pipeline.manifest import Manifest, ProvisionSpec
from pipeline.windows import startup_scripts
from pipeline.windows.inspection import WindowsVolume, windows_volume, wipe_unused_space
from pipeline.windows.registry import Hive, zero_free_cells

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "provision"
RUNNER = TEMPLATES / "runner.ps1"
SYSPREP_UNATTEND = TEMPLATES / "sysprep-unattend.xml"
RESULTS = "ProgramData/bakery/provision"
LAUNCHER = r"Windows\Setup\Scripts\bakery-provision.cmd"
SYSPREP_ARGUMENTS = r"/generalize /oobe /shutdown /quiet /unattend:C:\Windows\System32\Sysprep\unattend.xml"


@dataclass
class StepResult:
    index: int
    name: str
    kind: str
    exit_code: int | None  # None: never ran
    log_tail: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ProvisionResult:
    logs: Path
    steps: list[StepResult] = field(default_factory=list)
    finished: bool = False
    vm: VmResult | None = None

    def to_dict(self) -> dict:
        return {"logs": str(self.logs), "finished": self.finished, "steps": [s.to_dict() for s in self.steps],
                **({"vm": self.vm.to_dict()} if self.vm else {})}


def templates_sha256() -> str:
    digest = hashlib.sha256()
    for template in (RUNNER, SYSPREP_UNATTEND):
        digest.update(template.read_bytes())
    return digest.hexdigest()


def provision(manifest: Manifest, disk: CheckedImage, files: dict[str, Path], workdir: Path, *, logs: Path,
              record=lambda result: None) -> Path:
    """Run the provisioning steps on a copy of the gated `disk`; the provisioned disk (a standalone qcow2) is returned."""
    spec = manifest.provision
    workdir.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    work = workdir / "provisioned.qcow2"
    result = ProvisionResult(logs)
    run(["qemu-img", "convert", "-q", *qemu_img_input(disk), "-O", "qcow2", work], timeout=6 * 3600)
    try:
        planted = _plant_launcher(work, workdir)
        media = write_iso(workdir / "provision.iso", _media(manifest, files), label="BAKERY_PROVISION")
        vm = _machine(spec, work, media, planted.firmware)
        say(f"provision {manifest.name}: {len(spec.steps)} step(s), at most {spec.max_reboots} reboot(s), {planted.firmware}, "
            f"{spec.disk_bus}")
        try:
            result.vm = run_vm(vm, logs, on_status=lambda line: say(f"provision: {line}"))
        except VmFailed as failure:
            result.vm = failure.result
            _collect(work, workdir, manifest, result, planted, clean=False)
            raise BakeryError(f"{manifest.path}: provision: {_running(result)}{failure.reason}",
                              hint=failure.hint) from None
        _collect(work, workdir, manifest, result, planted, clean=True)
        say(f"provision: {len(result.steps)} step(s) done, sysprep ran; {result.vm.reboots} reboot(s), {result.vm.elapsed_s:.0f} s")
        return work
    except BaseException:
        work.unlink(missing_ok=True)
        raise
    finally:
        (workdir / "provision.iso").unlink(missing_ok=True)
        record(result)


def _machine(spec: ProvisionSpec, work: Path, media: Path, firmware: str) -> VmSpec:
    """The provisioning VM: the work disk on the manifest's bus, the media as a CD-ROM it does not boot from,
    a network only when Windows Update needs one."""
    return VmSpec(disk=Drive(work, "qcow2"), disk_bus=spec.disk_bus, cdroms=(media,), boot_cdrom=False, role="provision",
                  firmware=firmware, memory_mib=spec.memory_mib, cpus=spec.cpus, max_reboots=spec.max_reboots,
                  timeout_s=timeout_s(spec.timeout_minutes, spec.tcg_timeout_factor),
                  network="open" if any(s.kind == "windows-update" for s in spec.steps) else "restricted")


def _plan(manifest: Manifest) -> str:
    rows = ["index\tname\tkind\tfile\treboot\trepeat\targuments"]
    for index, step in enumerate(manifest.provision.steps, start=1):
        arguments = step.arguments if step.kind != "cloudbase-init" else f"{step.name}.conf"
        file = f"{step.name}{_suffix(step.kind)}" if step.file else "-"  # never empty: a tab is IFS white space in sh
        rows.append("\t".join((str(index), step.name, step.kind, file, "yes" if step.reboot else "no",
                               "yes" if step.repeat else "no", arguments)))
    return "\n".join(rows) + "\n"


def _suffix(kind: str) -> str:
    return {"powershell": ".ps1", "cmd": ".cmd", "msi": ".msi", "exe": ".exe", "msu": ".msu", "cloudbase-init": ".msi"}[kind]


def _media(manifest: Manifest, files: dict[str, Path]) -> dict[str, bytes | Path]:
    spec = manifest.provision
    media = {"bakery/plan.tsv": _plan(manifest).encode(), "bakery/runner.ps1": RUNNER.read_bytes(),
             "bakery/sysprep-unattend.xml": SYSPREP_UNATTEND.read_bytes(),
             "bakery/runner.cfg": (f"MAX_REBOOTS={spec.max_reboots}\nEXCLUDE_KBS='{' '.join(spec.exclude_kbs)}'\n"
                                   f"SYSPREP={'yes' if spec.sysprep else 'no'}\nSYSPREP_ARGUMENTS='{SYSPREP_ARGUMENTS}'\n"
                                   "SYSPREP_UNATTEND=sysprep-unattend.xml\n").encode()}
    for step in spec.steps:
        if step.file:
            media[f"bakery/files/{step.name}{_suffix(step.kind)}"] = files[f"{step.name}.file"]
        if step.config:
            media[f"bakery/files/{step.name}.conf"] = files[f"{step.name}.config"]
    return media


@contextlib.contextmanager
def _software_hive(found: WindowsVolume, workdir: Path) -> Iterator[Hive]:
    """SOFTWARE edited on a local copy (hivex does not write through FUSE), copied back when the block ends."""
    copy = workdir / "SOFTWARE"
    shutil.copyfile(found.software_hive, copy)
    with Hive(copy, write=True) as software:
        yield software
    zero_free_cells(copy)  # hivex keeps old copies of what it changed in free cells: nothing of ours stays readable
    shutil.copyfile(copy, found.software_hive)


LAUNCHER_TEXT = "\r\n".join([
    "@echo off", "rem Written by the image bakery: run the provisioning runner when its media is in a drive.",
    "for %%d in (D E F G H I J K L M N O P Q R S T U V W X Y Z) do if exist %%d:\\bakery\\runner.ps1 "
    "powershell.exe -NoProfile -ExecutionPolicy Bypass -File %%d:\\bakery\\runner.ps1 -Media %%d:\\bakery", ""])


@dataclass
class Planted:
    """What the source had before the runner's launcher was planted, so that removing it gives that state back."""

    firmware: str
    policy: startup_scripts.PolicySnapshot
    had: dict[str, bool]  # the folders the launcher and the results live in


OWN_FOLDERS = (r"Windows\Setup", r"Windows\Setup\Scripts", "ProgramData/bakery")


def _plant_launcher(work: Path, workdir: Path) -> Planted:
    """The startup script that starts the runner from whichever drive holds the media."""
    with windows_volume(work, "qcow2", workdir / "volume", writable=True, label=str(work)) as found:
        had = {folder: found.path(folder).is_dir() for folder in OWN_FOLDERS}
        path = found.path(LAUNCHER)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(LAUNCHER_TEXT.encode("ascii"))
        with _software_hive(found, workdir) as software:
            policy = startup_scripts.PolicySnapshot.take(found.path, software)
            startup_scripts.register(found.path, software, startup_scripts.StartupScript(_launcher_script(software)))
            policy.after_planting(found.path)
        return Planted(found.layout.firmware, policy, had)


def _collect(work: Path, workdir: Path, manifest: Manifest, result: ProvisionResult, planted: Planted, *, clean: bool) -> None:
    """Read what the runner wrote on C: (copied into the logs directory). With `clean`, in the same mount: a
    failed step or a missing sysprep fails here, else the runner's traces are removed, and then the volume's
    unused space is wiped."""
    with windows_volume(work, "qcow2", workdir / "volume", writable=clean, label=str(work)) as found:
        _read_results(found, manifest, result)
        if not clean:
            return
        _raise_for_failed_step(manifest, result)
        _remove_runner_traces(found, workdir, planted)
        partition = found.partition
    wipe_unused_space(work, "qcow2", partition, workdir / "wipe", label=str(work))


def _remove_runner_traces(found: WindowsVolume, workdir: Path, planted: Planted) -> None:
    """The images made from this disk carry neither the launcher (file and policy entries, the local policy as
    the source had it) nor the step logs (a script may have printed what it should not have; the logs
    directory has them), nor folders the source did not have."""
    found.path(LAUNCHER).unlink(missing_ok=True)
    shutil.rmtree(found.path(RESULTS), ignore_errors=True)
    for folder in reversed(OWN_FOLDERS):
        path = found.path(folder)
        if not planted.had[folder] and path.is_dir() and (folder == "ProgramData/bakery" or not any(path.iterdir())):
            shutil.rmtree(path)
    with _software_hive(found, workdir) as software:
        script = _launcher_script(software)
        planted.policy.restore(found.path, software, script)
        left = [s for s in startup_scripts.registered(found.path, software) if s.lower() == script.lower()]
    if left:
        raise BakeryError(f"{found.label}: provision: the launcher {script} is still registered after removing it")


def _launcher_script(software: Hive) -> str:
    return startup_scripts.system_root(software) + LAUNCHER.removeprefix("Windows")


def _read_results(found: WindowsVolume, manifest: Manifest, result: ProvisionResult) -> None:
    results = found.path(RESULTS)
    for index, step in enumerate(manifest.provision.steps, start=1):
        base = f"{index:02d}-{step.name}"
        code = _read_text(results / f"{base}.exit")
        log = _read_text(results / f"{base}.log")
        if log:
            (result.logs / f"{base}.log").write_text(log)
        lines = [line for line in log.splitlines() if line.strip()]
        result.steps.append(StepResult(index, step.name, step.kind, int(code) if code.strip().lstrip("-").isdigit() else None,
                                       lines[-1][:200] if lines else ""))
    result.finished = (results / "finished").exists()


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes()[:1_000_000].decode("utf-8", errors="replace")
    except OSError:
        return ""


def _running(result: ProvisionResult) -> str:
    """The step that was running when the VM failed: the first without an exit code."""
    pending = next((s for s in result.steps if s.exit_code is None), None)
    return f"step {pending.index} '{pending.name}' was running: " if pending else ""


def _raise_for_failed_step(manifest: Manifest, result: ProvisionResult) -> None:
    failed = next((s for s in result.steps if s.exit_code not in (0, 3010)), None)
    if failed:
        what = "did not run" if failed.exit_code is None else f"exited {failed.exit_code}"
        tail = f": {failed.log_tail}" if failed.log_tail else ""
        raise BakeryError(f"{manifest.path}: provision: step {failed.index} '{failed.name}' ({failed.kind}) {what}{tail}",
                          hint=f"step logs in {result.logs}")
    if not result.finished:
        raise BakeryError(f"{manifest.path}: provision: the guest powered off before sysprep ran", hint=f"logs in {result.logs}")
