"""The answer file and the config media of an unattended Windows install.

templates/autounattend.xml.j2 and templates/firstlogon.cmd.j2 are rendered from the manifest's `install:`
section; the result is checked for what Setup needs before any VM starts (a broken answer file otherwise
shows up hours later as a Setup dialog nobody sees). The config media is an ISO 9660 + Joliet image holding
autounattend.xml at its root, firstlogon.cmd, the virtio drivers for that Windows and the guest agent.

Secrets: the Administrator password (and a product key read from a file) are registered for redaction as
soon as they are read. They exist only in the answer file on the config media; the build directory keeps a
redacted copy for the report, and the config media is deleted when the install ends.
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pipeline.common import secrets
from pipeline.common.errors import BakeryError, ManifestError
from pipeline.common.isomedia import write_iso
from pipeline.common.paths import TEMPLATES
from pipeline.manifest import InstallSpec, Manifest, SecretRef
from pipeline.windows.drivers import DEFAULT_SELECTION, OS_DIRECTORIES
from pipeline.windows.virtio_win import VirtioWin

ANSWER_TEMPLATE = TEMPLATES / "autounattend.xml.j2"
FIRSTLOGON_TEMPLATE = TEMPLATES / "firstlogon.cmd.j2"
NS = "{urn:schemas-microsoft-com:unattend}"
COMPONENT_ATTRIBUTES = {"processorArchitecture": "amd64", "publicKeyToken": "31bf3856ad364e35", "language": "neutral",
                        "versionScope": "nonSxS"}
DRIVE_LETTERS = tuple("DEFGHIJ")  # where removable media may land in Windows PE (X: is PE itself)
CONFIG_MARKER = "bakery-config.txt"  # lets firstlogon's caller find the config media's drive
GUEST_AGENT = "guest-agent/qemu-ga-x86_64.msi"
REDACTED = "*SENSITIVE*DATA*DELETED*"  # what Setup itself writes in place of secrets in its copies

# Microsoft's published KMS client setup keys (GVLKs): public, they only make a machine look for a KMS host.
KMS_CLIENT_KEYS = {
    ("w7", "Professional"): "FJ82H-XT6CR-J8D7P-XQJJ2-GPDD4",
    ("w7", "Enterprise"): "33PXH-7Y6KF-2VJC9-XBBR8-HVTHH",
    ("2k8R2", "ServerStandard"): "YC6KT-GKW9T-YTKYR-T4X34-R7VHC",
    ("2k8R2", "ServerEnterprise"): "489J6-VHDMP-X63PK-3K798-CPX3Y",
    ("2k8R2", "ServerDatacenter"): "74YFP-3QFB3-KQT8W-PMXWJ-7M648",
    ("w10", "Professional"): "W269N-WFGWX-YVC9B-4J6C9-T83GX",
    ("w10", "Enterprise"): "NPPR9-FWDCX-D2C8J-H872K-2YT43",
    ("w11", "Professional"): "W269N-WFGWX-YVC9B-4J6C9-T83GX",
    ("w11", "Enterprise"): "NPPR9-FWDCX-D2C8J-H872K-2YT43",
    ("2k16", "ServerStandard"): "WC2BQ-8NRM3-FDDYY-2BFGV-KHKQY",
    ("2k16", "ServerDatacenter"): "CB7KF-BWN84-R7R2Y-793K2-8XDDG",
    ("2k19", "ServerStandard"): "N69G4-B89J2-4G8F4-WWYCC-J464C",
    ("2k19", "ServerDatacenter"): "WMDGN-G9PQG-XVVXX-R3X43-63DFG",
    ("2k22", "ServerStandard"): "VDYBN-27WPP-V4HQT-9VMD4-VMK7H",
    ("2k22", "ServerDatacenter"): "WX4NM-KYWYW-QJJR4-XV3QB-6VM33",
    ("2k25", "ServerStandard"): "TVRH6-WHNXV-R9WG3-9XRFY-MY832",
    ("2k25", "ServerDatacenter"): "D764K-2NDRG-47T6Q-P8T8W-YP6DF",
}


@dataclass(frozen=True)
class Partition:
    type: str  # EFI, MSR, Primary
    size_mib: int | None  # None: the rest of the disk
    format: str | None = None
    label: str | None = None
    letter: str | None = None
    active: bool = False


LAYOUTS = {
    "uefi": (Partition("EFI", 100, "FAT32", "System"), Partition("MSR", 16),
             Partition("Primary", None, "NTFS", "Windows", "C")),
    "bios": (Partition("Primary", 100, "NTFS", "System Reserved", active=True),
             Partition("Primary", None, "NTFS", "Windows", "C")),
}


@dataclass(frozen=True)
class AnswerFile:
    text: str  # with the secrets: only ever written to the config media
    redacted: str  # for the build directory and the report
    firstlogon: str
    drivers: tuple[str, ...]  # driver folders on the config media

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def read_secret(ref: SecretRef, manifest: Manifest) -> str:
    """A secret's value, registered for redaction before anything can print it."""
    if ref.env:
        value = os.environ.get(ref.env, "")
        if not value:
            raise ManifestError(str(manifest.path), ref.field, f"environment variable {ref.env} is not set or empty")
    else:
        try:
            value = Path(ref.file).read_text().strip()
        except OSError as exc:
            raise ManifestError(str(manifest.path), ref.field, f"cannot read secret file {ref.file}: {exc.strerror}") from None
        if not value:
            raise ManifestError(str(manifest.path), ref.field, f"secret file {ref.file} is empty")
    secrets.register(value)
    return value


def product_key(spec: InstallSpec, manifest: Manifest) -> str | None:
    if spec.product_key is None:
        return None
    if isinstance(spec.product_key, SecretRef):
        return read_secret(spec.product_key, manifest)
    key = KMS_CLIENT_KEYS.get((spec.windows, spec.edition))
    if key is None:
        known = sorted(edition for windows, edition in KMS_CLIENT_KEYS if windows == spec.windows)
        raise ManifestError(str(manifest.path), "install.edition",
                            f"no KMS client key for {spec.windows} {spec.edition}; expected one of {', '.join(known) or 'none'}"
                            " or set install.product_key to none or {file: PATH}")
    return key


def driver_folders(spec: InstallSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(folders Windows PE needs: the boot storage driver and the network; every folder on the media)."""
    storage = "vioscsi" if spec.disk_bus == "virtio-scsi" else "viostor"
    return (storage, "NetKVM"), DEFAULT_SELECTION


def render(manifest: Manifest, *, password: str, key: str | None, guest_agent: bool) -> AnswerFile:
    spec = manifest.install
    setup_drivers, all_drivers = driver_folders(spec)
    context = {
        "language": spec.language,
        "timezone": spec.timezone,
        "setup_driver_paths": _paths(setup_drivers),
        "offline_driver_paths": _paths(all_drivers),
        "partitions": LAYOUTS[spec.firmware],
        "windows_partition": len(LAYOUTS[spec.firmware]),
        "image_key": "/IMAGE/INDEX" if spec.image_index is not None else "/IMAGE/NAME",
        "image_value": spec.image_index if spec.image_index is not None else spec.image_name,
        "product_key": key,
        "administrator_password": password,
        "pre_windows8": OS_DIRECTORIES.index(spec.windows) < OS_DIRECTORIES.index("w8"),
        "drive_letters": DRIVE_LETTERS,
        "config_marker": CONFIG_MARKER,
    }
    text = _render(ANSWER_TEMPLATE, context, autoescape=True)
    redacted = _render(ANSWER_TEMPLATE, {**context, "administrator_password": REDACTED,
                                         "product_key": REDACTED if key and isinstance(spec.product_key, SecretRef) else key},
                       autoescape=True)
    firstlogon = _render(FIRSTLOGON_TEMPLATE, {"guest_agent": GUEST_AGENT.replace("/", "\\") if guest_agent else None},
                         autoescape=False)
    answer = AnswerFile(text, redacted, firstlogon.replace("\r\n", "\n").replace("\n", "\r\n"), tuple(all_drivers))
    check(answer, spec)
    return answer


def _paths(folders: tuple[str, ...]) -> list[str]:
    return [f"{letter}:\\drivers\\{folder}" for folder in folders for letter in DRIVE_LETTERS]


def _render(template: Path, context: dict, *, autoescape: bool) -> str:
    env = ImmutableSandboxedEnvironment(loader=jinja2.FileSystemLoader(str(template.parent)), undefined=jinja2.StrictUndefined,
                                        autoescape=autoescape, keep_trailing_newline=True)
    try:
        return env.get_template(template.name).render(context)
    except jinja2.TemplateError as exc:
        raise BakeryError(f"{template}: cannot render: {exc}") from None


# -- what Setup needs, checked before any VM starts --------------------------------------------------------

REQUIRED_COMPONENTS = {
    "windowsPE": ("Microsoft-Windows-International-Core-WinPE", "Microsoft-Windows-PnpCustomizationsWinPE",
                  "Microsoft-Windows-Setup"),
    "offlineServicing": ("Microsoft-Windows-PnpCustomizationsNonWinPE",),
    "specialize": ("Microsoft-Windows-Shell-Setup",),
    "oobeSystem": ("Microsoft-Windows-International-Core", "Microsoft-Windows-Shell-Setup"),
}


def check(answer: AnswerFile, spec: InstallSpec) -> None:
    """Raise a one-line BakeryError naming the first thing Setup would stop at."""
    where = f"{ANSWER_TEMPLATE.name} (rendered)"
    try:
        root = ET.fromstring(answer.text.encode())
    except ET.ParseError as exc:
        raise BakeryError(f"{where}: not well-formed XML: {exc}") from None
    if root.tag != f"{NS}unattend":
        raise BakeryError(f"{where}: the root element is {root.tag}, expected unattend in {NS[1:-1]}")
    passes = {settings.get("pass"): settings for settings in root.findall(f"{NS}settings")}
    components: dict[tuple[str, str], ET.Element] = {}
    for pass_name, settings in passes.items():
        for component in settings.findall(f"{NS}component"):
            name = component.get("name")
            for attribute, expected in COMPONENT_ATTRIBUTES.items():
                if component.get(attribute) != expected:
                    raise BakeryError(f"{where}: {pass_name}/{name}: {attribute} is {component.get(attribute)!r}, expected {expected!r}")
            components[(pass_name, name)] = component
    for pass_name, required in REQUIRED_COMPONENTS.items():
        if pass_name not in passes:
            raise BakeryError(f"{where}: the {pass_name} pass is missing")
        for name in required:
            if (pass_name, name) not in components:
                raise BakeryError(f"{where}: the {pass_name} pass lacks the {name} component")
    _check_setup(components[("windowsPE", "Microsoft-Windows-Setup")], spec, where)
    _check_drivers(components, answer, spec, where)
    _check_oobe(components[("oobeSystem", "Microsoft-Windows-Shell-Setup")], answer, where)


def _text(element: ET.Element, path: str) -> str | None:
    found = element.find("/".join(f"{NS}{p}" for p in path.split("/")))
    return found.text.strip() if found is not None and found.text else None


def _check_setup(setup: ET.Element, spec: InstallSpec, where: str) -> None:
    if (_text(setup, "UserData/AcceptEula") or "").lower() != "true":
        raise BakeryError(f"{where}: windowsPE/Microsoft-Windows-Setup: UserData/AcceptEula must be true or Setup stops at the licence page")
    image_key = _text(setup, "ImageInstall/OSImage/InstallFrom/MetaData/Key")
    if image_key not in ("/IMAGE/INDEX", "/IMAGE/NAME") or not _text(setup, "ImageInstall/OSImage/InstallFrom/MetaData/Value"):
        raise BakeryError(f"{where}: windowsPE/Microsoft-Windows-Setup: no image chosen in install.wim (/IMAGE/INDEX or /IMAGE/NAME)")
    disk = setup.find(f"{NS}DiskConfiguration/{NS}Disk")
    if disk is None:
        raise BakeryError(f"{where}: windowsPE/Microsoft-Windows-Setup: no DiskConfiguration; Setup would ask where to install")
    types = [_text(p, "Type") for p in disk.findall(f"{NS}CreatePartitions/{NS}CreatePartition")]
    modified = {_text(p, "PartitionID"): p for p in disk.findall(f"{NS}ModifyPartitions/{NS}ModifyPartition")}
    target = _text(setup, "ImageInstall/OSImage/InstallTo/PartitionID")
    if spec.firmware == "uefi" and types[:2] != ["EFI", "MSR"]:
        raise BakeryError(f"{where}: UEFI needs GPT partitions EFI and MSR before Windows, the answer file creates {types}")
    if spec.firmware == "bios" and ("EFI" in types or not any(_text(p, "Active") == "true" for p in modified.values())):
        raise BakeryError(f"{where}: BIOS needs an MBR layout with an active partition and no EFI partition, got {types}")
    windows = modified.get(target)
    if windows is None or _text(windows, "Format") != "NTFS" or _text(windows, "Letter") != "C":
        raise BakeryError(f"{where}: InstallTo partition {target} is not the NTFS partition given letter C")


def _check_drivers(components: dict, answer: AnswerFile, spec: InstallSpec, where: str) -> None:
    setup_drivers, _ = driver_folders(spec)
    for (pass_name, component), needed in ((("windowsPE", "Microsoft-Windows-PnpCustomizationsWinPE"), setup_drivers),
                                           (("offlineServicing", "Microsoft-Windows-PnpCustomizationsNonWinPE"), answer.drivers)):
        paths = {(p.text or "").rsplit("\\", 1)[-1] for p in components[(pass_name, component)].iter(f"{NS}Path")}
        missing = [d for d in needed if d not in paths]
        if missing:
            consequence = f"the {spec.disk_bus} disk would be invisible to Setup" if pass_name == "windowsPE" else "drivers missing after install"
            raise BakeryError(f"{where}: {pass_name}/{component} lacks driver paths for {', '.join(missing)} ({consequence})")


def _check_oobe(shell: ET.Element, answer: AnswerFile, where: str) -> None:
    if not _text(shell, "UserAccounts/AdministratorPassword/Value"):
        raise BakeryError(f"{where}: oobeSystem/Microsoft-Windows-Shell-Setup: no Administrator password; OOBE would ask for one")
    if (_text(shell, "AutoLogon/Enabled") or "").lower() != "true":
        raise BakeryError(f"{where}: oobeSystem/Microsoft-Windows-Shell-Setup: AutoLogon is off, so FirstLogonCommands never run")
    commands = [c.text or "" for c in shell.iter(f"{NS}CommandLine")]
    if not any("firstlogon.cmd" in c for c in commands):
        raise BakeryError(f"{where}: oobeSystem: FirstLogonCommands do not run firstlogon.cmd; the guest would never power off")
    last = [line for line in answer.firstlogon.splitlines() if line.strip()][-1].lower()
    if "sysprep" not in last or "/generalize" not in last or "/shutdown" not in last:
        raise BakeryError(f"{FIRSTLOGON_TEMPLATE.name} (rendered): its last command must be sysprep /generalize ... /shutdown,"
                          " the power-off the build waits for")


# -- the config media --------------------------------------------------------------------------------------


def write_config_media(destination: Path, answer: AnswerFile, virtio_win: VirtioWin, spec: InstallSpec,
                       scratch: Path) -> list[str]:
    """autounattend.xml, firstlogon.cmd, drivers/<name>/..., the guest agent and the manifest's extra files.

    Returns the paths written (for the report)."""
    selection = virtio_win.select(answer.drivers, os_dir=spec.windows, arch="AMD64", product=f"Windows ({spec.windows})")
    drivers = scratch / "drivers"
    virtio_win.extract(selection, drivers)
    files: dict[str, bytes] = {
        "autounattend.xml": answer.text.encode(),
        "firstlogon.cmd": answer.firstlogon.encode(),
        CONFIG_MARKER: b"image bakery config media\r\n",
    }
    agent = scratch / "qemu-ga.msi"
    if virtio_win.extract_file(GUEST_AGENT, agent):
        files[GUEST_AGENT] = agent.read_bytes()
    for path in sorted(drivers.rglob("*")):
        if path.is_file():
            files[f"drivers/{path.relative_to(drivers).as_posix()}"] = path.read_bytes()
    for name, source in spec.config_files:
        try:
            files[name] = Path(source).read_bytes()
        except OSError as exc:
            raise BakeryError(f"install.config_files.{name}: cannot read {source}: {exc.strerror}") from None
    write_iso(destination, files, label="BAKERY_CONFIG")
    return sorted(files)
