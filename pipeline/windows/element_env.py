"""What the bake hands to element scripts, read back from the environment (for Python element scripts).

The bake sets these variables (pipeline/build/bake/refresh.py, `element_environment`); bash scripts use them directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.windows.volume import confined


@dataclass(frozen=True)
class ElementEnvironment:
    windows_root: Path
    system_hive: Path
    software_hive: Path
    control_set: str  # the set Windows boots (Select\Default)
    major: int
    minor: int
    build: int
    server: bool
    arch: str
    drivers_dir: Path
    drivers: tuple[str, ...]
    boot_drivers: tuple[str, ...]
    staging_dir: str  # Windows-relative, backslashes
    virtio_win_version: str
    build_epoch: int
    image_label: str = "the image"
    control_sets: tuple[str, ...] = ()  # every set Select names for booting: Default, Current, LastKnownGood

    @classmethod
    def from_environ(cls) -> "ElementEnvironment":
        env = os.environ
        return cls(
            windows_root=Path(env["BAKERY_WINDOWS_ROOT"]),
            system_hive=Path(env["BAKERY_HIVE_SYSTEM"]),
            software_hive=Path(env["BAKERY_HIVE_SOFTWARE"]),
            control_set=env["BAKERY_CONTROL_SET"],
            major=int(env["BAKERY_WINDOWS_MAJOR"]),
            minor=int(env["BAKERY_WINDOWS_MINOR"]),
            build=int(env["BAKERY_WINDOWS_BUILD"]),
            server=env["BAKERY_WINDOWS_SERVER"] == "1",
            arch=env["BAKERY_WINDOWS_ARCH"],
            drivers_dir=Path(env["BAKERY_DRIVERS_DIR"]),
            drivers=tuple(env.get("BAKERY_DRIVERS", "").split()),
            boot_drivers=tuple(env.get("BAKERY_BOOT_DRIVERS", "").split()),
            staging_dir=env["BAKERY_STAGING_DIR"],
            virtio_win_version=env["BAKERY_VIRTIO_WIN_VERSION"],
            build_epoch=int(env.get("BAKERY_BUILD_EPOCH", "0")),
            image_label=env.get("BAKERY_IMAGE_LABEL", "the image"),
            control_sets=tuple(env.get("BAKERY_CONTROL_SETS", env["BAKERY_CONTROL_SET"]).split()),
        )

    @property
    def staging_path(self) -> Path:
        return self.windows_path(self.staging_dir)

    @property
    def pre_windows8(self) -> bool:
        return (self.major, self.minor) < (6, 2)

    def windows_path(self, relative: str) -> Path:
        """A path on the Windows volume that passes through no symbolic link: a hostile image's link could
        point anywhere on the build host (volume.confined)."""
        return confined(self.windows_root, relative, label=self.image_label)
