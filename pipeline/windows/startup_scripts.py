"""A machine startup script in the local Group Policy, written offline: Windows runs it as SYSTEM at every
boot, before anyone logs on, whether or not the image was generalized.

Why this and not the alternatives, for a first-boot step on Windows 7 / 2008 R2 up to 11 / 2022:
- SetupComplete.cmd runs only after a sysprep specialize pass; RunOnce only at an interactive logon. A cloud
  VM from a golden image that was not sysprepped, used over RDP-less automation, may never get either.
- A service needs a service binary (virt-v2v ships rhsrvany/pnp_wait for that); a plain `cmd.exe` as
  ImagePath is killed or reported failed when it does not answer the service control manager in 30 s,
  and a driver install can take longer.
- A scheduled task needs the task XML plus binary TaskCache records whose format changed between releases.
- Local Group Policy startup scripts are documented, the same on every release since Windows 2000, and
  stored as plain files plus registry values.

What is written (merged with whatever local policy the image already has; nothing is removed):
- `System32\\GroupPolicy\\gpt.ini`: the Scripts client-side extension in gPCMachineExtensionNames and the
  machine half of Version raised by one, so the Group Policy client processes the local GPO at the next boot;
- `System32\\GroupPolicy\\Machine\\Scripts\\scripts.ini` (UTF-16 with BOM): the script under [Startup];
- SOFTWARE `...\\Group Policy\\Scripts\\Startup\\N\\M` and `...\\Group Policy\\State\\Machine\\Scripts\\
  Startup\\N\\M`: what the Scripts extension itself records after processing, which is what runs the
  script when the client decides the policy has not changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.windows.registry import REG_DWORD, REG_QWORD, REG_SZ, Hive

SCRIPTS_EXTENSION = "[{42B5FAAE-6536-11D2-AE5A-0000F87571E3}{40B6664F-4972-11D1-A7CA-0000F87571E3}]"
GROUP_POLICY = r"Microsoft\Windows\CurrentVersion\Group Policy"
STARTUP_KEYS = (GROUP_POLICY + r"\Scripts\Startup", GROUP_POLICY + r"\State\Machine\Scripts\Startup")
LOCAL_GPO = "LocalGPO"


@dataclass(frozen=True)
class StartupScript:
    script: str  # as Windows sees it, e.g. C:\Windows\Drivers\VirtIO\install-virtio-drivers.cmd
    parameters: str = ""


def system_root(software: Hive) -> str:
    """C:\\Windows, as the image's own registry names it."""
    return str(software.get(r"Microsoft\Windows NT\CurrentVersion", "SystemRoot") or r"C:\Windows")


def register(windows_path: Callable[[str], Path], software: Hive, startup: StartupScript) -> None:
    """Make `startup` a machine startup script of the local GPO (idempotent: registering twice adds it once)."""
    root = system_root(software)
    machine = rf"{root}\System32\GroupPolicy\Machine"
    _update_gpt_ini(windows_path(r"Windows\System32\GroupPolicy\gpt.ini"))
    _update_scripts_ini(windows_path(r"Windows\System32\GroupPolicy\Machine\Scripts\scripts.ini"), startup)
    for key in STARTUP_KEYS:
        _record(software, key, machine, startup)


def unregister(windows_path: Callable[[str], Path], software: Hive, script: str) -> None:
    """Take `script` out of the local GPO's startup scripts again (scripts.ini renumbered, both registry
    records), and raise the policy version so the client processes the change; other scripts stay."""
    ini = windows_path(r"Windows\System32\GroupPolicy\Machine\Scripts\scripts.ini")
    if ini.is_file():
        _remove_from_scripts_ini(ini, script)
    for key in STARTUP_KEYS:
        for gpo in software.subkeys(key) if software.has(key) else []:
            scripts = software.subkeys(rf"{key}\{gpo}")
            ordered = sorted(scripts, key=lambda s: int(s) if s.isdigit() else 0)
            kept = [_typed_values(software, rf"{key}\{gpo}\{s}") for s in ordered
                    if str(software.get(rf"{key}\{gpo}\{s}", "Script", "")).lower() != script.lower()]
            if len(kept) == len(scripts):
                continue
            for name in scripts:  # renumbered from 0, as the Scripts extension writes them
                software.delete(rf"{key}\{gpo}\{name}")
            for number, values in enumerate(kept):
                software.set_many(rf"{key}\{gpo}\{number}", values)
    _update_gpt_ini(windows_path(r"Windows\System32\GroupPolicy\gpt.ini"))


def _typed_values(software: Hive, path: str) -> dict[str, tuple]:
    return {name: (value, software.value_type(path, name)) for name, value in software.values(path).items()}


def _remove_from_scripts_ini(path: Path, script: str) -> None:
    lines, section, entries = _read_ini_text(path).splitlines(), None, []
    kept_lines = []
    for line in lines:
        if match := re.match(r"\s*\[([^\]]+)\]", line):
            section = match.group(1).strip().lower()
        elif section == "startup" and (match := re.match(r"\s*(\d+)(CmdLine|Parameters)\s*=\s*(.*?)\s*$", line, re.I)):
            entries.append((int(match.group(1)), match.group(2), match.group(3)))
            continue
        kept_lines.append(line)
    commands = {n: v for n, kind, v in entries if kind.lower() == "cmdline"}
    parameters = {n: v for n, kind, v in entries if kind.lower() == "parameters"}
    remaining = [n for n in sorted(commands) if commands[n].lower() != script.lower()]
    at = next((i for i, line in enumerate(kept_lines) if line.strip().lower() == "[startup]"), None)
    if at is None:
        return
    renumbered = [f"{new}{kind}={value}" for new, old in enumerate(remaining)
                  for kind, value in (("CmdLine", commands[old]), ("Parameters", parameters.get(old, "")))]
    kept_lines[at + 1:at + 1] = renumbered
    path.write_bytes("\r\n".join(kept_lines).encode("utf-16") + "\r\n".encode("utf-16-le"))


def registered(windows_path: Callable[[str], Path], software: Hive) -> list[str]:
    """The startup scripts local policy runs at boot (registry records and scripts.ini together)."""
    key = STARTUP_KEYS[0]  # what runs; the State copy mirrors it
    found = [str(script) for gpo in software.subkeys(key) for index in software.subkeys(rf"{key}\{gpo}")
             if (script := software.get(rf"{key}\{gpo}\{index}", "Script"))]
    ini = windows_path(r"Windows\System32\GroupPolicy\Machine\Scripts\scripts.ini")
    if ini.is_file():
        found += [cmd for _, cmd in _startup_entries(_read_ini_text(ini))]
    return list(dict.fromkeys(found))


def _update_gpt_ini(path: Path) -> None:
    text = path.read_bytes().decode("latin-1") if path.is_file() else "[General]\r\n"
    lines = text.splitlines()
    version = next((int(m.group(1)) for line in lines if (m := re.match(r"\s*Version\s*=\s*(\d+)", line, re.I))), 0)
    machine, user = version & 0xFFFF, version >> 16
    version = (user << 16) | ((machine + 1) & 0xFFFF)
    names = next((m.group(1) for line in lines if (m := re.match(r"\s*gPCMachineExtensionNames\s*=\s*(.*)", line, re.I))), "")
    pairs = set(re.findall(r"\[[^\]]*\]", names)) | {SCRIPTS_EXTENSION}
    kept = [line for line in lines if not re.match(r"\s*(Version|gPCMachineExtensionNames)\s*=", line, re.I)]
    if not any(line.strip().lower() == "[general]" for line in kept):
        kept.insert(0, "[General]")
    at = next(i for i, line in enumerate(kept) if line.strip().lower() == "[general]") + 1
    kept[at:at] = [f"gPCMachineExtensionNames={''.join(sorted(pairs, key=str.upper))}", f"Version={version}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join(kept) + "\r\n").encode("latin-1"))


def _read_ini_text(path: Path) -> str:
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    return data.decode("latin-1")


def _startup_entries(text: str) -> list[tuple[int, str]]:
    entries, section = [], None
    for line in text.splitlines():
        if match := re.match(r"\s*\[([^\]]+)\]", line):
            section = match.group(1).strip().lower()
        elif section == "startup" and (match := re.match(r"\s*(\d+)CmdLine\s*=\s*(.*?)\s*$", line, re.I)):
            entries.append((int(match.group(1)), match.group(2)))
    return entries


def _update_scripts_ini(path: Path, startup: StartupScript) -> None:
    text = _read_ini_text(path) if path.is_file() else ""
    entries = _startup_entries(text)
    if any(cmd.lower() == startup.script.lower() for _, cmd in entries):
        return
    number = max((n for n, _ in entries), default=-1) + 1
    added = [f"{number}CmdLine={startup.script}", f"{number}Parameters={startup.parameters}"]
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().lower() == "[startup]"), None)
    if start is None:
        lines = ([*lines, ""] if lines else []) + ["[Startup]", *added]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("[")), len(lines))
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1
        lines[end:end] = added
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("\r\n".join(lines).encode("utf-16") + "\r\n".encode("utf-16-le"))


def _record(software: Hive, key: str, machine: str, startup: StartupScript) -> None:
    gpos = software.subkeys(key) if software.has(key) else []
    local = next((g for g in gpos if software.get(rf"{key}\{g}", "GPO-ID") == LOCAL_GPO), None)
    if local is None:
        local = str(max((int(g) for g in gpos if g.isdigit()), default=-1) + 1)
        software.set_many(rf"{key}\{local}", {
            "GPO-ID": (LOCAL_GPO, REG_SZ), "SOM-ID": ("Local", REG_SZ), "FileSysPath": (machine, REG_SZ),
            "DisplayName": ("Local Group Policy", REG_SZ), "GPOName": ("Local Group Policy", REG_SZ),
            "PSScriptOrder": (1, REG_DWORD),
        })
    scripts = software.subkeys(rf"{key}\{local}")
    if any(str(software.get(rf"{key}\{local}\{s}", "Script", "")).lower() == startup.script.lower() for s in scripts):
        return
    index = str(max((int(s) for s in scripts if s.isdigit()), default=-1) + 1)
    software.set_many(rf"{key}\{local}\{index}", {
        "Script": (startup.script, REG_SZ), "Parameters": (startup.parameters, REG_SZ),
        "IsPowershell": (0, REG_DWORD), "ExecTime": (0, REG_QWORD),
    })


# -- leaving the local policy exactly as it was ------------------------------------------------------------------

POLICY_FILES = (r"Windows\System32\GroupPolicy\gpt.ini", r"Windows\System32\GroupPolicy\Machine\Scripts\scripts.ini")
POLICY_DIRS = (r"Windows\System32\GroupPolicy", r"Windows\System32\GroupPolicy\Machine", r"Windows\System32\GroupPolicy\Machine\Scripts")


@dataclass
class PolicySnapshot:
    """The local policy as it was before a temporary startup script was planted (files, folders, registry keys),
    and as the planting left it, so that removing the script can give back the exact source state: a policy
    version raised twice, an empty scripts.ini or empty Startup keys are traces a careful reader finds."""

    files: dict[str, bytes | None]
    dirs: dict[str, bool]
    keys: dict[str, bool]
    gpos: dict[str, list[str]]  # the GPO subkeys each startup key had
    planted: dict[str, bytes | None] | None = None

    @classmethod
    def take(cls, windows_path: Callable[[str], Path], software: Hive) -> "PolicySnapshot":
        return cls(files=_files(windows_path), dirs={d: windows_path(d).is_dir() for d in POLICY_DIRS},
                   keys={key: software.has(key) for key in _policy_keys()},
                   gpos={key: software.subkeys(key) for key in STARTUP_KEYS})

    def after_planting(self, windows_path: Callable[[str], Path]) -> None:
        self.planted = _files(windows_path)

    def restore(self, windows_path: Callable[[str], Path], software: Hive, script: str) -> None:
        """Remove `script` again; where nothing else changed the policy since it was planted, put back the very
        files, folders and keys the source had (or had not)."""
        untouched = self.planted is not None and _files(windows_path) == self.planted
        unregister(windows_path, software, script)
        if not untouched:
            return  # a step changed the local policy itself: only our script is taken out
        for name, data in self.files.items():
            path = windows_path(name)
            if data is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(data)
        for name in reversed(POLICY_DIRS):
            path = windows_path(name)
            if not self.dirs[name] and path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        for key in STARTUP_KEYS:  # a Local GPO record we added, now without scripts
            for gpo in software.subkeys(key):
                if gpo not in self.gpos[key] and not software.subkeys(rf"{key}\{gpo}"):
                    software.delete(rf"{key}\{gpo}")
        for key in sorted(self.keys, key=len):  # the shallowest key we created takes the rest with it
            if not self.keys[key] and software.has(key):
                software.delete(key)


def _files(windows_path: Callable[[str], Path]) -> dict[str, bytes | None]:
    return {name: windows_path(name).read_bytes() if windows_path(name).is_file() else None for name in POLICY_FILES}


def _policy_keys() -> list[str]:
    """Every key on the way to the startup-script keys, below Group Policy (which Windows always has)."""
    keys = []
    for full in STARTUP_KEYS:
        parts = full.removeprefix(GROUP_POLICY + "\\").split("\\")
        keys += [GROUP_POLICY + "\\" + "\\".join(parts[:n]) for n in range(1, len(parts) + 1)]
    return list(dict.fromkeys(keys))
