"""Boot the built image once, on the machine its properties describe, before anyone can launch it.

A qcow2 overlay takes every write, so the image itself is never changed; it is deleted afterwards, as are
the VM's sockets and children (the runner's guarantees). Ready means the QEMU guest agent answers
guest-sync over its virtio-serial channel, or the first-boot script's marker appears on the serial port.
Not ready in time, a panic (0x7B INACCESSIBLE_BOOT_DEVICE after a driver change is the classic), or a reset
loop fails the build in one line, with the screenshot and the serial log kept; nothing is uploaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.build.vm import Drive, VmFailed, VmResult, VmSpec, probe_accelerator, require_firmware, run_vm, timeout_s
from pipeline.canary.hardware import Hardware, derive
from pipeline.common.errors import BakeryError
from pipeline.common.progress import say
from pipeline.common.run import run
from pipeline.manifest import Manifest
from pipeline.properties.explain import agent_channel, release_number

MIN_MEMORY_MIB = 2048  # what a Windows guest gets when the image's min_ram asks for less


class CanaryFailed(BakeryError):
    def __init__(self, message: str, result: "CanaryResult"):
        vm = result.vm
        hint = f"serial log {vm.serial_log}" + (f", screenshot {vm.screenshot}" if vm.screenshot else "") if vm else None
        super().__init__(message, hint=hint)
        self.result = result


@dataclass
class CanaryResult:
    ok: bool
    hardware: Hardware
    logs: Path
    vm: VmResult | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def property_value(self) -> str:
        """What the image records: the canary ran, where, and how long the guest took to be ready."""
        return f"ok accelerator={self.vm.accelerator} duration_s={self.vm.elapsed_s:.0f}"

    def to_dict(self) -> dict:
        return {"ok": self.ok, "logs": str(self.logs), "hardware": self.hardware.to_dict(),
                "domain_xml": self.hardware.domain_xml, "notes": self.notes,
                **({"vm": self.vm.to_dict(), "qemu_command": self.vm.command} if self.vm else {})}


# What SeaBIOS, OVMF, GRUB, iPXE, Windows' boot manager and the tests' stand-in print on COM1 before the OS has
# taken over its disk: a serial marker may not match any of it (the nonce alone already makes it unforgeable).
FIRMWARE_TEXT = ("seabios", "booting from", "bdsdxe", "grub", "ipxe", "press any key", "windows boot manager", "standin:",
                 "hardware:")


def check(manifest: Manifest, properties: dict[str, str]) -> None:
    """What can be refused before the build: an unknown Nova release, a ready signal the properties give the guest
    no way to send, and hardware Nova or libvirt would refuse."""
    spec = manifest.canary
    if spec is None:
        return
    try:
        release_number(spec.nova)
    except BakeryError:
        raise manifest.error(("canary", "nova"), f"expected a Nova release name (as explain --nova), got {spec.nova!r}") from None
    if spec.ready == "serial-marker" and any(spec.marker.lower() in text or text in spec.marker.lower() for text in FIRMWARE_TEXT):
        raise manifest.error(("canary", "marker"), f"{spec.marker!r} is (or holds) text that firmware or a boot loader prints before "
                             "Windows runs; choose a marker of your own (the guest writes it with this boot's nonce)")
    if spec.ready == "guest-agent" and not agent_channel(properties):
        raise manifest.error(("canary", "ready"), "guest-agent needs the property hw_qemu_guest_agent=yes: only then does Nova "
                             "give the guest the agent's channel; set it, or use ready: serial-marker")
    hardware = plan(manifest, properties)
    if hardware.vm.firmware == "uefi":
        require_firmware(hardware.vm)


def plan(manifest: Manifest, properties: dict[str, str]) -> Hardware:
    """The machine the canary will boot: the properties' virtual hardware, the manifest's limits, this host's accelerator."""
    spec = manifest.canary
    accel = probe_accelerator()
    base = VmSpec(disk=None, disk_bus="virtio-blk", cdroms=(), role="canary", memory_mib=spec.memory_mib or max(MIN_MEMORY_MIB, manifest.min_ram),
                  cpus=spec.cpus, timeout_s=timeout_s(spec.timeout_minutes, spec.tcg_timeout_factor, accel),
                  max_reboots=spec.max_reboots, ready=spec.ready, ready_marker=spec.marker, network="restricted",
                  ovmf_code=Path(spec.ovmf_code) if spec.ovmf_code else None, ovmf_vars=Path(spec.ovmf_vars) if spec.ovmf_vars else None)
    return derive(properties, nova=spec.nova, accel=accel, base=base, label=f"{manifest.path}: canary")


def run_canary(manifest: Manifest, image: Path, hardware: Hardware, *, workdir: Path, logs: Path,
               record=lambda result: None) -> CanaryResult:
    """Boot a throw-away overlay (in `workdir`) of the raw `image` on `hardware`; raises CanaryFailed unless the
    guest became ready."""
    overlay = workdir / "canary-overlay.qcow2"
    nonce = os.urandom(12).hex() if hardware.vm.ready == "serial-marker" else ""  # this boot's, unknown to any firmware
    vm = replace(hardware.vm, disk=Drive(overlay, "qcow2"), ready_nonce=nonce)
    workdir.mkdir(parents=True, exist_ok=True)
    result = CanaryResult(False, hardware, logs)
    if hardware.not_applied:
        result.notes.append(hardware.not_applied)
        say(f"canary: {hardware.not_applied}")
    say(f"canary: booting {image.name} as Nova would: {hardware.summary}")
    try:
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", image.resolve(), "-F", "raw", overlay])
        try:
            result.vm = run_vm(vm, logs, on_status=lambda line: say(f"canary: {line}"))
        except VmFailed as failure:
            result.vm = failure.result
            raise CanaryFailed(f"{manifest.path}: canary: the image did not boot on the machine its properties describe "
                               f"({_summary(vm)}): {failure.reason}", result) from None
        result.ok = True
        say(f"canary: ready after {result.vm.elapsed_s:.0f} s ({result.vm.accelerator}, {result.vm.reboots} reboot(s))")
        return result
    finally:
        overlay.unlink(missing_ok=True)
        record(result)


def _summary(vm: VmSpec) -> str:
    return (f"{vm.machine}, {vm.firmware}{', Secure Boot' if vm.secure_boot else ''}, disk bus {vm.disk_bus}, nic {vm.nic}")
