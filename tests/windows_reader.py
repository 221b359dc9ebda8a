"""An independent reader for what the bake writes: partition tables parsed here, NTFS read with
dissect.ntfs, hives with regipy. None of the code that wrote the image (sfdisk, ntfs-3g, hivex) is used.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

from dissect.ntfs import NTFS
from dissect.util.stream import RangeStream
from regipy.registry import RegistryHive

SECTOR = 512


def partitions(image: Path) -> tuple[str, list[tuple[int, int]]]:
    """('dos'|'gpt', [(start byte, size bytes)]) read from the raw image's first sectors."""
    with open(image, "rb") as disk:
        head = disk.read(SECTOR * 34)
    assert head[510:512] == b"\x55\xaa", "no MBR boot signature"
    if head[SECTOR:SECTOR + 8] == b"EFI PART":
        entries_lba, count, size = struct.unpack_from("<QII", head, SECTOR + 72)
        found = []
        with open(image, "rb") as disk:
            disk.seek(entries_lba * SECTOR)
            table = disk.read(count * size)
        for index in range(count):
            entry = table[index * size:(index + 1) * size]
            if entry[:16] == b"\0" * 16:
                continue
            first, last = struct.unpack_from("<QQ", entry, 32)
            found.append((first * SECTOR, (last - first + 1) * SECTOR))
        return "gpt", found
    found = []
    for index in range(4):
        entry = head[446 + 16 * index:446 + 16 * (index + 1)]
        kind, start, count = entry[4], *struct.unpack_from("<II", entry, 8)
        if kind:
            found.append((start * SECTOR, count * SECTOR))
    return "dos", found


class OfflineWindows:
    def __init__(self, image: Path):
        self.label, parts = partitions(image)
        self._fh = open(image, "rb")
        self.fs = None
        for start, size in parts:
            self._fh.seek(start + 3)
            if self._fh.read(8) != b"NTFS    ":
                continue
            fs = NTFS(RangeStream(self._fh, start, size))
            if self._exists(fs, "Windows/System32/config/SYSTEM"):
                self.fs = fs
                break
        assert self.fs is not None, f"{image}: no NTFS partition holding Windows"
        self._scratch = tempfile.TemporaryDirectory()

    def close(self) -> None:
        self._fh.close()
        self._scratch.cleanup()

    @staticmethod
    def _exists(fs, path: str) -> bool:
        try:
            fs.mft.get(path)
            return True
        except Exception:
            return False

    def exists(self, path: str) -> bool:
        return self._exists(self.fs, path.replace("\\", "/"))

    def read(self, path: str) -> bytes:
        return self.fs.mft.get(path.replace("\\", "/")).open().read()

    def listdir(self, path: str) -> list[str]:
        return sorted(self.fs.mft.get(path.replace("\\", "/")).listdir())

    def hive(self, name: str) -> "Registry":
        local = Path(self._scratch.name) / name
        local.write_bytes(self.read(f"Windows/System32/config/{name}"))
        return Registry(RegistryHive(str(local)))


class Registry:
    def __init__(self, hive: RegistryHive):
        self.hive = hive

    def values(self, path: str) -> dict:
        key = self.hive.get_key("\\" + path.strip("\\"))
        return {v.name: v.value for v in key.iter_values()}

    def types(self, path: str) -> dict:
        key = self.hive.get_key("\\" + path.strip("\\"))
        return {v.name: v.value_type for v in key.iter_values()}

    def has(self, path: str) -> bool:
        try:
            self.hive.get_key("\\" + path.strip("\\"))
            return True
        except Exception:
            return False

    def subkeys(self, path: str) -> list[str]:
        return sorted(s.name for s in self.hive.get_key("\\" + path.strip("\\")).iter_subkeys())

    def current_control_set(self) -> str:
        return f"ControlSet{self.values('Select')['Current']:03d}"
