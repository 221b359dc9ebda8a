"""Run one VM under QEMU (a Windows install, a provisioning run, a canary boot) until the guest powers itself
off or, for a canary, is ready; and never leave a process behind.

The guest is watched over QMP (the monitor socket is ours: Python listens, QEMU connects, so there is no
start-up race). Reboots (RESET) are part of Windows Setup and are counted, not treated as the end (beyond
max_reboots they are a loop); the end is SHUTDOWN initiated by the guest, or the ready signal. A panic (pvpanic's GUEST_PANICKED, with the guest paused so the screen
can be captured) or the timeout takes a PNG screenshot, stops QEMU and fails the build in one line.

Every child (QEMU, swtpm) gets PR_SET_PDEATHSIG, so even a SIGKILLed build takes them down; on Ctrl-C,
SIGTERM or any exception the `finally` quits QEMU, then kills what is left, then stops swtpm.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError

from pipeline.common.errors import BakeryError
from pipeline.common.run import require_tool
from pipeline.common.settings import choice
from pipeline.common.sinks import machine_type, qemu_value

OVMF_DIR = Path("/usr/share/OVMF")
OVMF_CODE = OVMF_DIR / "OVMF_CODE_4M.fd"
OVMF_CODE_SECURE = OVMF_DIR / "OVMF_CODE_4M.secboot.fd"
OVMF_VARS = OVMF_DIR / "OVMF_VARS_4M.fd"
OVMF_VARS_SECURE = OVMF_DIR / "OVMF_VARS_4M.ms.fd"  # Microsoft's keys enrolled: Windows' boot manager verifies
KEYPRESS_WINDOW_S = 60.0  # how long the first boot may sit at "Press any key to boot from CD or DVD"
STOP_GRACE_S = 10.0
READY_POLL_S = 2.0
AGENT_ANSWER_S = 2.0
RESET_DEBOUNCE_S = 2.0  # one reboot can raise RESET twice (the guest's reset, then the firmware's own)
PR_SET_PDEATHSIG = 1
NONCE_OEM_PREFIX = "bakery-ready-nonce="  # the SMBIOS OEM string that carries a serial-marker boot's nonce


class VmFailed(BakeryError):
    """The guest did not finish: timeout, panic, or QEMU stopped. Carries what was captured, and the reason
    without the "<role> VM:" prefix for callers that say which stage failed themselves."""

    def __init__(self, role: str, reason: str, result: "VmResult"):
        super().__init__(f"{role} VM: {reason}",
                         hint=f"serial log {result.serial_log}" + (f", screenshot {result.screenshot}" if result.screenshot else ""))
        self.reason = reason
        self.result = result


@dataclass(frozen=True)
class Accelerator:
    name: str  # kvm | tcg
    reason: str


@dataclass(frozen=True)
class Drive:
    path: Path
    format: str  # raw | qcow2


@dataclass(frozen=True)
class VmSpec:
    disk: Drive | None  # None until a boot names it (the canary's overlay)
    disk_bus: str  # virtio-blk | virtio-scsi | sata | ide | lsi (a SCSI bus without a model: libvirt's default)
    cdroms: tuple[Path, ...]  # the first one is booted when the disk holds nothing bootable (boot_cdrom)
    firmware: str = "bios"  # bios | uefi
    secure_boot: bool = False
    tpm: bool = False
    machine: str = "q35"
    memory_mib: int = 4096
    cpus: int = 2
    timeout_s: float = 4 * 3600
    boot_keypress: bool = False
    ovmf_code: Path | None = None
    ovmf_vars: Path | None = None
    role: str = "install"  # install | provision | canary: names the VM in messages and in ps
    boot_cdrom: bool = True
    nic: str = "virtio-net-pci"  # a QEMU NIC device
    network: str = "restricted"  # restricted (no way out) | open (Windows Update) | none
    video: str = "std"  # a QEMU -vga value
    tpm_model: str = ""  # tpm-crb | tpm-tis; empty: what the machine type suggests
    tpm_version: str = "2.0"
    localtime: bool = True  # what Windows expects of a PC's clock (and what Nova gives os_type=windows)
    hpet: bool = True
    hyperv: tuple[str, ...] = ()  # -cpu flags (hv-relaxed, ...): honoured by KVM only
    guest_agent: bool = False  # a virtio-serial port named org.qemu.guest_agent.0
    max_reboots: int | None = None  # more resets than this is a reboot loop
    ready: str = ""  # "" (wait for power-off) | serial-marker | guest-agent: the end of a canary boot
    ready_marker: str = "BAKERY-READY"
    # serial-marker: a fresh nonce per boot, given to the guest as an SMBIOS OEM string (type 11, which no
    # firmware or loader prints); the guest is ready when it writes "<marker> <nonce>" on COM1, which only an
    # OS that has booted and read its SMBIOS table can do (Windows: Win32_ComputerSystem.OEMStringArray).
    ready_nonce: str = ""

    @property
    def q35(self) -> bool:
        return is_q35(self.machine)

    @property
    def firmware_code(self) -> Path:
        return self.ovmf_code or (OVMF_CODE_SECURE if self.secure_boot else OVMF_CODE)

    @property
    def firmware_vars(self) -> Path:
        """The variables the guest gets a private copy of."""
        return self.ovmf_vars or (OVMF_VARS_SECURE if self.secure_boot else OVMF_VARS)


def is_q35(machine: str) -> bool:
    return machine.startswith(("q35", "pc-q35"))


@dataclass
class VmResult:
    accelerator: str
    workdir: Path
    serial_log: Path
    event_log: Path
    reboots: int = 0
    elapsed_s: float = 0.0
    outcome: str = "running"  # powered-off | ready | timeout | panic | reboot-loop | qemu-exited | interrupted
    screenshot: Path | None = None
    last_serial_line: str = ""
    command: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "outcome": self.outcome, "accelerator": self.accelerator, "reboots": self.reboots,
            "elapsed_s": round(self.elapsed_s, 1), "serial_log": str(self.serial_log), "event_log": str(self.event_log),
            "screenshot": str(self.screenshot) if self.screenshot else None, "last_serial_line": self.last_serial_line,
            "command": self.command,
        }


def probe_accelerator(cpuinfo: Path = Path("/proc/cpuinfo"), sysfs: Path = Path("/sys/module")) -> Accelerator:
    """KVM only where it runs stock guests: hardware virtualisation flags, and not Firecracker's kvm-pvm
    (whose /dev/kvm exists but loops a stock kernel forever and fails OVMF at once)."""
    override = os.environ.get("BAKERY_ACCEL", "")
    if override:  # a typo must not quietly mean "whatever this machine has"
        return Accelerator(choice(override, "BAKERY_ACCEL", ("kvm", "tcg")), "BAKERY_ACCEL")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Accelerator("tcg", "/dev/kvm is missing or not accessible")
    flags = {word for line in cpuinfo.read_text().splitlines() if line.startswith("flags") for word in line.split()}
    if not flags & {"vmx", "svm"}:
        return Accelerator("tcg", "the CPU shows no vmx/svm: /dev/kvm cannot run stock guests here")
    if (sysfs / "kvm_pvm").exists():
        return Accelerator("tcg", "/dev/kvm is kvm-pvm, which does not run stock firmware")
    return Accelerator("kvm", "vmx/svm present and /dev/kvm usable")


def timeout_s(minutes: float, tcg_factor: float, accel: Accelerator | None = None) -> float:
    """A manifest's timeout is for KVM; TCG runs the same guest many times slower."""
    accel = accel or probe_accelerator()
    return minutes * 60 * (tcg_factor if accel.name == "tcg" else 1)


def qemu_command(spec: VmSpec, workdir: Path, accel: Accelerator, *, qmp_socket: Path, tpm_socket: Path | None,
                 agent_socket: Path | None = None) -> list[str]:
    # Every value below that is not the bakery's own constant is checked or escaped where it lands: the machine
    # type against what Nova and QEMU accept, file names with their commas doubled (QEMU's option syntax).
    machine = machine_type(f"{spec.role} VM", spec.machine) + (",smm=on" if spec.secure_boot else "") + ("" if spec.hpet else ",hpet=off")
    cpu = "host" if accel.name == "kvm" else "max"
    if accel.name == "kvm" and spec.hyperv:
        cpu += "," + ",".join(spec.hyperv)
    argv = [
        "qemu-system-x86_64", "-name", f"bakery-{spec.role}", "-nodefaults", "-machine", machine, "-accel", accel.name,
        "-cpu", cpu, "-smp", str(spec.cpus), "-m", str(spec.memory_mib),
        "-display", "none", "-vga", spec.video,  # a framebuffer to screenshot; nobody watches it
        "-chardev", f"socket,id=mon,path={qemu_value(qmp_socket)}", "-mon", "chardev=mon,mode=control",
        "-chardev", f"file,id=ser0,path={qemu_value(workdir / 'serial.log')}", "-serial", "chardev:ser0",
        "-device", "pvpanic", "-action", "panic=pause",  # the bakery's own observer: a guest's crash becomes an event
        "-device", "qemu-xhci", "-device", "usb-tablet",
    ]
    if spec.localtime:
        argv += ["-rtc", "base=localtime"]
    if spec.ready_nonce:
        if not spec.ready_nonce.isalnum():
            raise BakeryError(f"{spec.role} VM: a ready nonce must be letters and digits")
        argv += ["-smbios", f"type=11,value={NONCE_OEM_PREFIX}{spec.ready_nonce}"]
    if spec.network != "none":
        argv += ["-device", f"{spec.nic},netdev=net0", "-netdev", "user,id=net0" + (",restrict=on" if spec.network == "restricted" else "")]
    argv += _firmware(spec, workdir) + _tpm(spec, tpm_socket) + _agent_channel(agent_socket)
    # detect-zeroes=unmap keeps the target sparse: what Setup zeroes costs no space in the image.
    if spec.disk.format not in ("raw", "qcow2"):
        raise BakeryError(f"{spec.role} VM: disk format {spec.disk.format!r}; expected raw or qcow2")
    argv += ["-drive", f"file={qemu_value(spec.disk.path)},if=none,id=disk0,format={spec.disk.format},cache=unsafe,discard=unmap,"
             "detect-zeroes=unmap"]
    return argv + _disk_devices(spec) + _cdroms(spec)


def _firmware(spec: VmSpec, workdir: Path) -> list[str]:
    if spec.firmware != "uefi":
        return []
    argv = ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={qemu_value(spec.firmware_code)}",
            "-drive", f"if=pflash,format=raw,unit=1,file={qemu_value(workdir / 'OVMF_VARS.fd')}"]
    return argv + (["-global", "driver=cfi.pflash01,property=secure,value=on"] if spec.secure_boot else [])


def _tpm(spec: VmSpec, tpm_socket: Path | None) -> list[str]:
    if not tpm_socket:
        return []
    model = spec.tpm_model or ("tpm-crb" if spec.q35 else "tpm-tis")
    if model not in ("tpm-crb", "tpm-tis"):
        raise BakeryError(f"{spec.role} VM: TPM model {model!r}; expected tpm-tis or tpm-crb")
    return ["-chardev", f"socket,id=tpmchr,path={qemu_value(tpm_socket)}", "-tpmdev", "emulator,id=tpm0,chardev=tpmchr",
            "-device", f"{model},tpmdev=tpm0"]


def _agent_channel(agent_socket: Path | None) -> list[str]:
    if not agent_socket:
        return []
    return ["-device", "virtio-serial-pci", "-chardev", f"socket,id=qga0,path={qemu_value(agent_socket)},server=on,wait=off",
            "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"]


def _cdroms(spec: VmSpec) -> list[str]:
    argv = []
    on_the_ide_bus = spec.disk_bus == "ide" or (spec.disk_bus == "sata" and spec.q35)  # the disk holds port 0 then
    for index, iso in enumerate(spec.cdroms):
        argv += ["-drive", f"file={qemu_value(iso)},if=none,id=cd{index},media=cdrom,readonly=on,format=raw"]
        # q35's AHCI has one device per port; pc's PIIX IDE has two buses of two units each
        slot = index + (1 if on_the_ide_bus else 0)
        bus = f",bus=ide.{slot}" if spec.q35 else f",bus=ide.{slot // 2},unit={slot % 2}"
        argv += ["-device", f"ide-cd,drive=cd{index}{bus}" + (",bootindex=0" if index == 0 and spec.boot_cdrom else "")]
    return argv


def _disk_devices(spec: VmSpec) -> list[str]:
    if spec.disk_bus == "virtio-scsi":
        return ["-device", "virtio-scsi-pci,id=scsi0", "-device", "scsi-hd,drive=disk0,bus=scsi0.0,bootindex=1"]
    if spec.disk_bus == "lsi":
        return ["-device", "lsi53c895a,id=scsi0", "-device", "scsi-hd,drive=disk0,bus=scsi0.0,bootindex=1"]
    if spec.disk_bus == "sata" and not spec.q35:  # pc has IDE only: an AHCI controller, as libvirt adds one
        return ["-device", "ich9-ahci,id=sata0", "-device", "ide-hd,drive=disk0,bus=sata0.0,bootindex=1"]
    if spec.disk_bus in ("sata", "ide"):  # the machine's own controller: AHCI on q35, PIIX IDE on pc
        return ["-device", "ide-hd,drive=disk0,bus=ide.0,bootindex=1"]
    return ["-device", "virtio-blk-pci,drive=disk0,bootindex=1"]


def run_vm(spec: VmSpec, workdir: Path, *, on_status: Callable[[str], None] = lambda line: None) -> VmResult:
    """Boot the VM and wait for the guest to power off (or, for spec.ready, to be ready: then QEMU is stopped).
    Raises VmFailed otherwise; no child survives."""
    require_tool("qemu-system-x86_64", "qemu-system-x86")
    workdir.mkdir(parents=True, exist_ok=True)
    accel = probe_accelerator()
    result = VmResult(accel.name, workdir, workdir / "serial.log", workdir / "qmp-events.jsonl")
    on_status(f"accelerator {accel.name} ({accel.reason}); timeout {spec.timeout_s / 60:.0f} min")
    # Unix socket paths are limited to 107 bytes: the sockets live in a short private directory instead.
    with _children() as children, _sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="bakery-vm-") as sockets:
        tpm_socket = _start_swtpm(workdir, Path(sockets), children, tpm2=spec.tpm_version != "1.2") if spec.tpm else None
        if spec.firmware == "uefi":
            require_firmware(spec)
            shutil.copyfile(spec.firmware_vars, workdir / "OVMF_VARS.fd")
        try:
            asyncio.run(_supervise(spec, workdir, Path(sockets), accel, result, children, tpm_socket, on_status))
        except KeyboardInterrupt:
            result.outcome = "interrupted"
            raise
    if result.outcome != ("ready" if spec.ready else "powered-off"):
        raise VmFailed(spec.role, _failure_reason(result, spec), result)
    return result


def require_firmware(spec: VmSpec) -> None:
    """The OVMF files a UEFI guest boots with exist (checked before the hours a build may take)."""
    for what, path in (("firmware code", spec.firmware_code), ("firmware variables", spec.firmware_vars)):
        if not Path(path).is_file():
            raise BakeryError(f"{spec.role} VM: UEFI {what} {path} is not a file",
                              hint="install Debian's ovmf package (make deps), or fix the manifest's ovmf setting")


def _failure_reason(result: VmResult, spec: VmSpec) -> str:
    last = f"; last serial line: {result.last_serial_line!r}" if result.last_serial_line else ""
    goal = f"was ready ({spec.ready})" if spec.ready else "powered off"
    what = {
        "timeout": f"the guest {'was not ready' if spec.ready else 'did not power off'} within {spec.timeout_s / 60:.1f} min ({result.accelerator})",
        "panic": "the guest panicked (pvpanic)",
        "reboot-loop": f"the guest rebooted more than {spec.max_reboots} times (a reboot loop)",
        "powered-off": "the guest powered off before it was ready",
        "qemu-exited": f"QEMU exited before the guest {goal}",
        "host-shutdown": "QEMU was shut down from outside the guest",
    }.get(result.outcome, result.outcome)
    return f"{what} after {result.reboots} reboot(s), {result.elapsed_s:.0f} s{last}"


async def _supervise(spec: VmSpec, workdir: Path, sockets: Path, accel: Accelerator, result: VmResult,
                     children: list[subprocess.Popen], tpm_socket: Path | None, on_status: Callable[[str], None]) -> None:
    qmp = QMPClient(f"bakery-{spec.role}")
    qmp_socket = sockets / "qmp.sock"
    agent_socket = sockets / "qga.sock" if spec.guest_agent else None
    await qmp.start_server(str(qmp_socket))
    result.command = qemu_command(spec, workdir, accel, qmp_socket=qmp_socket, tpm_socket=tpm_socket, agent_socket=agent_socket)
    qemu = _spawn(result.command, workdir / "qemu.log", children)
    try:
        await asyncio.wait_for(qmp.accept(), timeout=30)
    except (asyncio.TimeoutError, QMPError, OSError):
        await _wait_exit(qemu, 5)
        result.outcome = "qemu-exited"
        raise BakeryError(f"QEMU did not start: {_last_line(workdir / 'qemu.log') or 'no output'}",
                          hint=f"command in {workdir / 'qemu.log'}") from None
    started = time.monotonic()
    try:
        with open(result.event_log, "w") as events:
            await _watch(qmp, qemu, spec, result, events, started, on_status, agent_socket)
    finally:
        result.elapsed_s = time.monotonic() - started
        result.last_serial_line = _last_line(result.serial_log)
        if qemu.poll() is None and result.outcome != "powered-off":
            await _quit(qmp, qemu)
        try:
            await qmp.disconnect()
        except (EOFError, QMPError, OSError):
            pass  # QEMU exited first and closed the socket: the expected end of a powered-off guest


async def _watch(qmp: QMPClient, qemu: subprocess.Popen, spec: VmSpec, result: VmResult, events, started: float,
                 on_status: Callable[[str], None], agent_socket: Path | None) -> None:
    with qmp.listener() as listener:
        next_status = started + 30
        next_ready_check = started
        marker = _MarkerScan(result.serial_log, ready_line(spec).encode()) if spec.ready == "serial-marker" else None
        last_reset = float("-inf")
        while True:
            now = time.monotonic()
            if now - started > spec.timeout_s:
                result.outcome = "timeout"
                await _screenshot(qmp, result)
                return
            if spec.max_reboots is not None and result.reboots > spec.max_reboots:
                result.outcome = "reboot-loop"
                await _screenshot(qmp, result)
                return
            if spec.ready and now >= next_ready_check:
                next_ready_check = now + READY_POLL_S
                if await _is_ready(spec, marker, agent_socket):
                    result.outcome = "ready"
                    await _screenshot(qmp, result)  # the picture of the boot the verdict is about
                    return
            if spec.boot_keypress and result.reboots == 0 and now - started < KEYPRESS_WINDOW_S:
                await _execute(qmp, "send-key", {"keys": [{"type": "qcode", "data": "spc"}]})
            try:
                event = await asyncio.wait_for(listener.get(), timeout=1.0)
            except asyncio.TimeoutError:
                if qemu.poll() is not None:
                    result.outcome = "qemu-exited"
                    return
                if now >= next_status:
                    next_status = now + 30
                    on_status(f"{now - started:.0f} s, {result.reboots} reboot(s); serial: {_last_line(result.serial_log)}")
                continue
            events.write(json.dumps({"event": event["event"], "data": event.get("data", {}), "timestamp": event.get("timestamp")}) + "\n")
            events.flush()
            name, data = event["event"], event.get("data", {})
            if name == "RESET":
                received = time.monotonic()
                if received - last_reset > RESET_DEBOUNCE_S:
                    result.reboots += 1
                    on_status(f"guest rebooted ({result.reboots}); serial: {_last_line(result.serial_log)}")
                last_reset = received
            elif name == "GUEST_PANICKED":
                result.outcome = "panic"
                await _screenshot(qmp, result)
                return
            elif name == "SHUTDOWN":
                result.outcome = "powered-off" if data.get("guest") else "host-shutdown"
                await _wait_exit(qemu, STOP_GRACE_S)
                return


async def _is_ready(spec: VmSpec, marker: "_MarkerScan | None", agent_socket: Path | None) -> bool:
    if spec.ready == "serial-marker":
        return marker is not None and marker.found()
    return agent_socket is not None and await _agent_answers(agent_socket)


def ready_line(spec: VmSpec) -> str:
    """What the guest writes on COM1 when it is ready: the marker, then this boot's nonce when there is one."""
    return f"{spec.ready_marker} {spec.ready_nonce}" if spec.ready_nonce else spec.ready_marker


@dataclass
class _MarkerScan:
    """A marker in a growing log, each byte read about once: hours of serial output are not re-read every poll.
    The last len(marker)-1 bytes are kept, so a marker split across two reads is still found."""

    path: Path
    marker: bytes
    offset: int = 0
    tail: bytes = b""

    def found(self) -> bool:
        try:
            with open(self.path, "rb") as log:
                log.seek(self.offset)
                new = log.read()
        except OSError:
            return False
        self.offset += len(new)
        window = self.tail + new
        self.tail = window[len(window) - len(self.marker) + 1:] if len(window) >= len(self.marker) else window
        return self.marker in window


async def _agent_answers(socket_path: Path) -> bool:
    """The QEMU guest agent's handshake: guest-sync with a fresh id, echoed back only by a live agent."""
    token = int.from_bytes(os.urandom(4), "big")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(socket_path)), AGENT_ANSWER_S)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        writer.write(json.dumps({"execute": "guest-sync", "arguments": {"id": token}}).encode() + b"\n")
        await writer.drain()
        deadline = time.monotonic() + AGENT_ANSWER_S
        while (left := deadline - time.monotonic()) > 0:
            line = await asyncio.wait_for(reader.readline(), left)
            if not line:
                return False
            try:
                if json.loads(line).get("return") == token:
                    return True
            except ValueError:
                continue  # a stale or partial line from an earlier attempt
        return False
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()


async def _execute(qmp: QMPClient, command: str, arguments: dict | None = None) -> bool:
    try:
        await asyncio.wait_for(qmp.execute(command, arguments), timeout=10)
        return True
    except (QMPError, OSError, asyncio.TimeoutError):
        return False


async def _screenshot(qmp: QMPClient, result: VmResult) -> None:
    target = result.workdir / "screenshot.png"
    if await _execute(qmp, "screendump", {"filename": str(target), "format": "png"}) and target.exists():
        result.screenshot = target


async def _quit(qmp: QMPClient, qemu: subprocess.Popen) -> None:
    await _execute(qmp, "quit")
    if not await _wait_exit(qemu, STOP_GRACE_S):
        qemu.kill()
        await _wait_exit(qemu, STOP_GRACE_S)


async def _wait_exit(process: subprocess.Popen, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return process.poll() is not None


def _start_swtpm(workdir: Path, sockets: Path, children: list[subprocess.Popen], *, tpm2: bool = True) -> Path:
    require_tool("swtpm", "swtpm")
    state = workdir / "tpm"
    state.mkdir(exist_ok=True)
    socket = sockets / "swtpm.sock"
    process = _spawn(["swtpm", "socket", *(["--tpm2"] if tpm2 else []), "--tpmstate", f"dir={state}", "--ctrl", f"type=unixio,path={socket}",
                      "--terminate", "--log", f"file={state / 'swtpm.log'}"], state / "swtpm.out", children)
    deadline = time.monotonic() + 10
    while not socket.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise BakeryError(f"swtpm did not start: {_last_line(state / 'swtpm.out') or _last_line(state / 'swtpm.log') or 'no output'}")
        time.sleep(0.05)
    return socket


def _spawn(argv: list[str], log: Path, children: list[subprocess.Popen]) -> subprocess.Popen:
    with open(log, "w") as output:
        output.write("$ " + " ".join(argv) + "\n")
        output.flush()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=_die_with_parent)
    children.append(process)
    return process


def _die_with_parent() -> None:
    """In the child before exec: the kernel kills it when the build process dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@contextmanager
def _children() -> Iterator[list[subprocess.Popen]]:
    """Whatever happens inside, every process started in it is gone afterwards."""
    children: list[subprocess.Popen] = []
    try:
        yield children
    finally:
        for process in reversed(children):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """CI cancels a job with SIGTERM; turn it into KeyboardInterrupt so the clean-up above runs."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if callable(signal.getsignal(signal.SIGTERM)):  # the CLI already turns SIGTERM into a cancellation
        yield
        return
    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - 4096))
            lines = [line.strip() for line in file.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""
