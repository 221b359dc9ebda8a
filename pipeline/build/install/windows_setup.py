"""Install Windows from its media, unattended, in a QEMU VM; the disk it leaves is the chain's source.

The answer file and config media come from unattend.py (next to this module), the VM from build/vm.py. What Setup
leaves (a qcow2, kept sparse) is handed to the build stage exactly like a golden image would be: refreshed
by the bake if the manifest has one, converted to raw, inspected, measured, published.

Kept for people after the run, in the install's log directory (listed in the JSON report): the serial log,
the QMP event log, QEMU's own output, a screenshot when the guest hung or panicked, and the answer file with
its secrets replaced. Not kept: the config media, the only place the Administrator password was written.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.build.install import unattend
from pipeline.build.vm import Drive, VmFailed, VmResult, VmSpec, run_vm
from pipeline.build.vm import timeout_s as scaled_timeout_s
from pipeline.common.paths import state_dir
from pipeline.common.progress import say
from pipeline.common.run import run
from pipeline.manifest import Manifest
from pipeline.windows.virtio_win import VirtioWin


@dataclass
class InstallResult:
    disk: Path | None  # the installed disk (qcow2); None when the install failed
    logs: Path
    answer_sha256: str = ""
    virtio_win_version: str | None = None
    config_media: list[str] = field(default_factory=list)
    vm: VmResult | None = None

    def to_dict(self) -> dict:
        return {
            "disk": str(self.disk) if self.disk else None,
            "logs": str(self.logs),
            "answer_file": str(self.logs / "autounattend.redacted.xml"),
            "answer_sha256": self.answer_sha256,
            "virtio_win_version": self.virtio_win_version,
            "config_media": self.config_media,
            **({"vm": self.vm.to_dict()} if self.vm else {}),
        }


def templates_sha256() -> str:
    """The templates that shape what Setup does: part of the build id."""
    digest = hashlib.sha256()
    for template in (unattend.ANSWER_TEMPLATE, unattend.FIRSTLOGON_TEMPLATE):
        digest.update(template.read_bytes())
    return digest.hexdigest()


def logs_dir(build_id: str) -> Path:
    return state_dir() / "logs" / f"install-{build_id[:16]}"


def timeout_s(manifest: Manifest) -> float:
    return scaled_timeout_s(manifest.install.timeout_minutes, manifest.install.tcg_timeout_factor)


def install(manifest: Manifest, media: Path, virtio_win: Path, workdir: Path, *, build_id: str,
            record: Callable[["InstallResult"], None] = lambda result: None) -> InstallResult:
    """Run Setup to the guest's power-off; `record` sees the result (logs, VM outcome) even when it fails."""
    spec = manifest.install
    logs = logs_dir(build_id)
    logs.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    result = InstallResult(None, logs)
    password = unattend.read_secret(spec.administrator_password, manifest)
    key = unattend.product_key(spec, manifest)
    config = workdir / "config.iso"
    disk = workdir / "installed.qcow2"
    try:
        with VirtioWin(virtio_win) as drivers:
            result.virtio_win_version = drivers.version
            answer = unattend.render(manifest, password=password, key=key, guest_agent=drivers.has_file(unattend.GUEST_AGENT))
            (logs / "autounattend.redacted.xml").write_text(answer.redacted)
            result.answer_sha256 = answer.sha256
            result.config_media = unattend.write_config_media(config, answer, drivers, spec, workdir / "config")
        run(["qemu-img", "create", "-q", "-f", "qcow2", disk, f"{spec.disk_size_gib}G"])
        cdroms = (media, *((virtio_win,) if virtio_win.is_file() else ()), config)
        vm_spec = VmSpec(
            disk=Drive(disk, "qcow2"), disk_bus=spec.disk_bus, cdroms=cdroms, firmware=spec.firmware,
            secure_boot=spec.secure_boot, tpm=spec.tpm, machine=spec.machine, memory_mib=spec.memory_mib,
            cpus=spec.cpus, timeout_s=timeout_s(manifest), boot_keypress=spec.boot_keypress,
            ovmf_code=Path(spec.ovmf_code) if spec.ovmf_code else None,
            ovmf_vars=Path(spec.ovmf_vars) if spec.ovmf_vars else None,
        )
        say(f"install {manifest.name}: {media.name}, {spec.firmware}"
            f"{' + Secure Boot' if spec.secure_boot else ''}{' + TPM 2.0' if spec.tpm else ''}, {spec.disk_bus}")
        try:
            result.vm = run_vm(vm_spec, logs, on_status=lambda line: say(f"install: {line}"))
        except VmFailed as failure:
            result.vm = failure.result
            raise
        result.disk = disk
        say(f"install: guest powered off after {result.vm.reboots} reboot(s), {result.vm.elapsed_s:.0f} s")
        return result
    except BaseException:
        disk.unlink(missing_ok=True)
        raise
    finally:
        config.unlink(missing_ok=True)  # the only copy of the password
        shutil.rmtree(workdir / "config", ignore_errors=True)
        record(result)
