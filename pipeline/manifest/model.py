"""The typed manifest: what a family's release asks for, after rendering and validation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.common.errors import ManifestError

DEFAULT_FAMILY_KEYS = ("os_distro", "os_distro_major", "os_edition", "architecture")



@dataclass(frozen=True)
class Source:
    location: str  # an absolute path, or a URL
    sha256: str
    format: str | None  # None: detected with qemu-img
    field: str = "source"  # where the manifest pins it (for error messages)

    @property
    def is_url(self) -> bool:
        return "://" in self.location


@dataclass(frozen=True)
class BakeSpec:
    """The offline virtio refresh: which virtio-win, which drivers, which extra elements."""

    virtio_win: Source
    drivers: tuple[str, ...]
    elements: tuple[str, ...]  # in addition to the default chain
    elements_path: tuple[str, ...]  # site element directories, searched before the project's
    qcow2: bool  # also write a qcow2 of the result
    epoch: str | None = None  # ISO date stamped on everything the bake writes (default: virtio-win's release date)


@dataclass(frozen=True)
class SecretRef:
    """Where a secret is read from at build time; the manifest holds only this reference."""

    file: str | None = None  # absolute path
    env: str | None = None  # environment variable name
    field: str = ""

    def describe(self) -> str:
        return f"file {self.file}" if self.file else f"environment variable {self.env}"


@dataclass(frozen=True)
class InstallSpec:
    """An unattended Windows Setup run under QEMU: the media, the answer file's choices, the machine."""

    media: Source  # the installation ISO
    virtio_win: Source  # the drivers Setup loads in windowsPE (storage, network)
    windows: str  # virtio-win OS directory of what gets installed: w7, 2k8R2, w10, w11, 2k16, 2k19, 2k22, 2k25
    image_index: int | None  # /IMAGE/INDEX in install.wim, or
    image_name: str | None  # /IMAGE/NAME
    edition: str  # the edition id the KMS client key is chosen by (Enterprise, ServerStandard, ...)
    product_key: str | SecretRef | None  # "kms" (public KMS client key), None (no key), or a secret file
    administrator_password: SecretRef
    language: str
    timezone: str
    firmware: str  # bios | uefi
    secure_boot: bool
    tpm: bool
    machine: str  # q35 | pc
    disk_bus: str  # virtio-blk | virtio-scsi
    disk_size_gib: int
    memory_mib: int
    cpus: int
    timeout_minutes: float  # with KVM; multiplied by tcg_timeout_factor under TCG
    tcg_timeout_factor: float
    boot_keypress: bool  # press a key while the first boot shows "Press any key to boot from CD" (UEFI ISOs)
    config_files: tuple[tuple[str, str], ...] = ()  # (name on the config media, absolute path)
    ovmf_code: str | None = None  # firmware overrides (default: Debian's OVMF 4M, Secure Boot build when asked)
    ovmf_vars: str | None = None

    def to_dict(self) -> dict:
        """The settings that shape the installed disk (no secret values, only where they come from)."""
        data = {k: v for k, v in self.__dict__.items() if k not in ("media", "virtio_win", "product_key", "administrator_password")}
        data["media_sha256"] = self.media.sha256
        data["virtio_win_sha256"] = self.virtio_win.sha256
        data["product_key"] = self.product_key if isinstance(self.product_key, str) or self.product_key is None else "file"
        data["config_files"] = [list(pair) for pair in self.config_files]
        return data


@dataclass(frozen=True)
class ProvisionStep:
    name: str  # plain: letters, digits, - and _ (it names the step's log and exit-code files)
    kind: str  # powershell | cmd | msi | exe | msu | windows-update | cloudbase-init
    file: Source | None  # the pinned script or installer (None for windows-update)
    arguments: str = ""
    reboot: bool = False  # reboot after it (an exit code of 3010 also asks for one)
    repeat: bool = False  # after a 3010 reboot, run it again until it exits 0 (update rounds)
    config: Source | None = None  # cloudbase-init's cloudbase-init.conf

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "sha256": self.file.sha256 if self.file else None, "arguments": self.arguments,
                "reboot": self.reboot, "repeat": self.repeat, "config_sha256": self.config.sha256 if self.config else None}


@dataclass(frozen=True)
class ProvisionSpec:
    """Steps that only work on a running Windows, run in QEMU by the runner from config media, then sysprep."""

    steps: tuple[ProvisionStep, ...]  # in order: Windows Update rounds, the manifest's steps, cloudbase-init
    exclude_kbs: tuple[str, ...]
    max_reboots: int
    timeout_minutes: float
    tcg_timeout_factor: float
    disk_bus: str  # sata (in-box on every Windows: boots before any virtio driver is installed) | virtio-blk | virtio-scsi
    memory_mib: int
    cpus: int
    sysprep: bool

    def to_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if k != "steps"}
        return {**data, "exclude_kbs": list(self.exclude_kbs), "steps": [step.to_dict() for step in self.steps]}


@dataclass(frozen=True)
class CanarySpec:
    """Boot a throw-away overlay of the built image on the machine its own properties ask Nova for."""

    ready: str  # guest-agent (guest-sync answered over virtio-serial) | serial-marker (a line on COM1)
    marker: str  # the serial-marker text
    timeout_minutes: float  # with KVM; multiplied by tcg_timeout_factor under TCG
    tcg_timeout_factor: float
    max_reboots: int  # Windows' first boot after sysprep reboots once or twice; more is a loop
    memory_mib: int | None  # None: the image's min_ram, at least 2048
    cpus: int
    nova: str  # the Nova release whose derivation of the virtual hardware is used (as `explain --nova`)
    ovmf_code: str | None = None  # firmware overrides, e.g. Secure Boot variables with your own keys enrolled
    ovmf_vars: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class UploadSpec:
    """How the bytes get to a cloud (upload: in the manifest, per target in targets:)."""

    method: str = "auto"  # auto | direct | glance-direct | web-download
    stores: tuple[str, ...] = ()  # () = the cloud's default store
    all_stores: bool = False
    all_stores_must_succeed: bool = True
    stage_format: str = "auto"  # auto | raw | qcow2 (qcow2 only where the cloud converts on import)
    web_download_url: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__, stores=list(self.stores))


@dataclass(frozen=True)
class TargetSpec:
    """One cloud the release goes to, with what differs there."""

    cloud: str
    visibility: str | None = None
    upload: UploadSpec | None = None


@dataclass(frozen=True)
class LifecyclePolicy:
    """What happens to superseded releases over time (release.lifecycle:). Ages count from the day a release
    was superseded: the release date of the one that replaced it."""

    keep_visible: int | None = None  # superseded releases that stay visible; older ones are hidden
    hide_after_days: int | None = None
    hide_as: str = "hidden"  # hidden (os_hidden) | community
    deactivate_after_days: int | None = None
    delete_after_days: int | None = None
    exempt_tags: tuple[str, ...] = ()
    exempt_properties: tuple[tuple[str, str], ...] = ()
    in_use_checks: tuple[str, ...] = ("servers", "volumes", "members")

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.keep_visible, self.hide_after_days, self.deactivate_after_days,
                                            self.delete_after_days))

    def to_dict(self) -> dict:
        return dict(self.__dict__, exempt_tags=list(self.exempt_tags), exempt_properties=dict(self.exempt_properties),
                    in_use_checks=list(self.in_use_checks))


@dataclass(frozen=True)
class ReleasePolicy:
    family_keys: tuple[str, ...]
    previous: str  # what happens to the releases this one supersedes
    lifecycle: LifecyclePolicy = field(default_factory=LifecyclePolicy)


@dataclass(frozen=True)
class ScsProfile:
    """The SCS-0102 image metadata this family promises (scs: in the manifest)."""

    replace_frequency: str
    provided_until: str  # YYYY-MM-DD | none | notice
    uuid_validity: str  # none | last-N | YYYY-MM-DD | notice | forever
    image_source: str  # a URL, or "private"
    image_description: str
    image_original_user: str
    os_purpose: str = "generic"
    hotfix_hours: int | None = None
    patchlevel: str | None = None

    def properties(self, build_date: str) -> dict[str, str]:
        return {"image_build_date": build_date, **{k: str(v) for k, v in self.__dict__.items() if v is not None}}


@dataclass(frozen=True)
class Manifest:
    path: Path
    name: str
    release_date: str
    family: dict[str, str]
    os: dict[str, str]
    source: Source | None  # the disk image the chain starts from (None: it is installed from media)
    properties: dict[str, Any]
    visibility: str
    min_ram: int
    min_disk: int | None
    max_virtual_gib: int  # a source (or built image) with a larger virtual size is refused before it is converted
    tags: tuple[str, ...]
    release: ReleasePolicy
    upstream_provider: str
    lint_suppress: dict[str, str] = field(default_factory=dict)  # rule id -> why it does not apply
    bake: BakeSpec | None = None
    install: InstallSpec | None = None
    canary: CanarySpec | None = None
    provision: ProvisionSpec | None = None
    upload: UploadSpec = field(default_factory=UploadSpec)
    targets: tuple[TargetSpec, ...] = ()
    scs: ScsProfile | None = None
    variables: dict[str, str] = field(default_factory=dict)
    rendered: str = ""  # canonical JSON of the validated document: what the build id hashes
    # (file, line) of every key path in the YAML, for errors found after validation
    positions: dict[tuple, tuple[Path, int]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.rendered.encode()).hexdigest()

    @property
    def family_filter(self) -> dict[str, str]:
        return {key: self.family[key] for key in self.release.family_keys}

    def error(self, keys: tuple, expected: str) -> ManifestError:
        """A one-line error naming the file and line where `keys` (or its nearest section) is written."""
        for depth in range(len(keys), 0, -1):
            if keys[:depth] in self.positions:
                file, line = self.positions[keys[:depth]]
                return ManifestError(str(file), ".".join(str(k) for k in keys), expected, line=line)
        return ManifestError(str(self.path), ".".join(str(k) for k in keys), expected)
