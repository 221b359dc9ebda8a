"""Windows registry hives through hivex: backslash key paths, typed values, case-insensitive like Windows.

Every registry read or write of the project (inspection, element scripts, fixtures) goes through here,
so no code edits regf bytes by hand except `empty_hive`, which writes the one thing hivex cannot: a new file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.common.errors import BakeryError

REG_NONE, REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ, REG_QWORD = 0, 1, 2, 3, 4, 7, 11


def _hivex():
    try:
        import hivex
    except ImportError:
        raise BakeryError("the hivex Python bindings are missing", hint="install python3-hivex and run `make deps`") from None
    return hivex


class Hive:
    """One hive file, opened for reading or writing. Writes land on disk at commit()."""

    def __init__(self, path: Path, *, write: bool = False):
        self.path = Path(path)
        self._h = _open(self.path, write)
        self.write = write

    def __enter__(self) -> "Hive":
        return self

    def __exit__(self, *exc_info) -> None:
        if self.write and exc_info[0] is None:
            self.commit()

    def commit(self) -> None:
        self._h.commit(None)

    # -- keys -------------------------------------------------------------------------------------------

    def key(self, path: str):
        """The node at a backslash path (case-insensitive), or None."""
        node = self._h.root()
        for part in _parts(path):
            node = self._h.node_get_child(node, part)
            if node is None:
                return None
        return node

    def has(self, path: str) -> bool:
        return self.key(path) is not None

    def ensure(self, path: str):
        node = self._h.root()
        for part in _parts(path):
            child = self._h.node_get_child(node, part)
            node = child if child is not None else self._h.node_add_child(node, part)
        return node

    def subkeys(self, path: str) -> list[str]:
        node = self.key(path)
        return [] if node is None else sorted(self._h.node_name(c) for c in self._h.node_children(node))

    def delete(self, path: str) -> None:
        node = self.key(path)
        if node is not None:
            self._h.node_delete_child(node)

    # -- values -----------------------------------------------------------------------------------------

    def values(self, path: str) -> dict[str, Any]:
        node = self.key(path)
        if node is None:
            return {}
        return {self._h.value_key(v): _decode(*self._h.value_value(v)) for v in self._h.node_values(node)}

    def get(self, path: str, name: str, default: Any = None) -> Any:
        node = self.key(path)
        if node is None:
            return default
        value = self._value(node, name)
        return default if value is None else _decode(*self._h.value_value(value))

    def _value(self, node, name: str):
        """The value `name` of a node (case-insensitive, as Windows), or None. Not hivex's node_get_value: its
        Python binding raises RuntimeError("Success") for a value that is not there, instead of returning None."""
        wanted = name.lower()
        return next((v for v in self._h.node_values(node) if self._h.value_key(v).lower() == wanted), None)

    def value_type(self, path: str, name: str) -> int | None:
        node = self.key(path)
        value = None if node is None else self._value(node, name)
        return None if value is None else self._h.value_type(value)[0]

    def set(self, path: str, name: str, value: Any, kind: int = REG_SZ) -> None:
        self._h.node_set_value(self.ensure(path), {"key": name, "t": kind, "value": _encode(value, kind)})

    def set_many(self, path: str, values: dict[str, tuple[Any, int]]) -> None:
        node = self.ensure(path)
        for name, (value, kind) in values.items():
            self._h.node_set_value(node, {"key": name, "t": kind, "value": _encode(value, kind)})


def _open(path: Path, write: bool):
    """hivex.Hivex(path): a hive it cannot open raises, and the half-built binding object then prints an
    AttributeError from its __del__ on stderr. The object is built by hand so a failure leaves nothing."""
    hivex = _hivex()

    class Handle(hivex.Hivex):
        def __del__(self):
            if getattr(self, "_o", None) is not None:
                super().__del__()

    handle = Handle.__new__(Handle)
    handle._o = None
    flags = 4 if write else 0  # HIVEX_OPEN_WRITE
    try:
        handle._o = hivex.libhivexmod.open(str(path), flags)
    except (RuntimeError, OSError) as exc:
        raise BakeryError(f"{path}: not a readable registry hive ({exc})") from None
    return handle


def _parts(path: str) -> list[str]:
    return [p for p in path.replace("/", "\\").split("\\") if p]


def _encode(value: Any, kind: int) -> bytes:
    if kind in (REG_SZ, REG_EXPAND_SZ):
        return (str(value) + "\0").encode("utf-16-le")
    if kind == REG_DWORD:
        return struct.pack("<I", int(value))
    if kind == REG_QWORD:
        return struct.pack("<Q", int(value))
    if kind == REG_MULTI_SZ:
        return "".join(s + "\0" for s in value).encode("utf-16-le") + b"\0\0"
    return bytes(value)


def _decode(kind: int, data: bytes) -> Any:
    if kind in (REG_SZ, REG_EXPAND_SZ):
        return data.decode("utf-16-le", errors="replace").split("\0", 1)[0]
    if kind == REG_DWORD and len(data) >= 4:
        return struct.unpack("<I", data[:4])[0]
    if kind == REG_QWORD and len(data) >= 8:
        return struct.unpack("<Q", data[:8])[0]
    if kind == REG_MULTI_SZ:
        return [s for s in data.decode("utf-16-le", errors="replace").split("\0") if s]
    return data


def boot_control_set(system: Hive) -> str:
    """`ControlSet00N` Windows boots: SYSTEM\\Select\\Default (Current is what the running system used; on
    disk they are nearly always equal, but it is Default the boot loader reads)."""
    return _select(system, "Default")


def selected_control_sets(system: Hive) -> tuple[str, ...]:
    """Every control set Select names for booting: Default, then Current and LastKnownGood (Windows 7 falls
    back to LastKnownGood after a failed boot, which is exactly when a new storage driver matters)."""
    found = [_select(system, "Default")]
    for name in ("Current", "LastKnownGood"):
        number = system.get("Select", name)
        if isinstance(number, int) and number > 0 and system.has(f"ControlSet{number:03d}"):
            found.append(f"ControlSet{number:03d}")
    return tuple(dict.fromkeys(found))


def _select(system: Hive, name: str) -> str:
    number = system.get("Select", name)
    if not isinstance(number, int) or not system.has(f"ControlSet{number:03d}"):
        raise BakeryError(f"{system.path}: SYSTEM\\Select\\{name} does not name an existing control set")
    return f"ControlSet{number:03d}"


# -- is the hive clean? -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HiveState:
    """A hive's base block sequence numbers, and what its transaction logs (.LOG1/.LOG2) still hold."""

    primary_sequence: int
    secondary_sequence: int
    pending_logs: tuple[str, ...]  # logs with entries newer than the hive itself

    @property
    def clean(self) -> bool:
        return self.primary_sequence == self.secondary_sequence and not self.pending_logs

    def to_dict(self) -> dict:
        return {"clean": self.clean, "primary_sequence": self.primary_sequence, "secondary_sequence": self.secondary_sequence,
                "pending_logs": list(self.pending_logs)}


def hive_state(path: Path) -> HiveState:
    """Windows writes a hive lazily: it raises the primary sequence number, writes, then the secondary. Unequal
    numbers mean an interrupted write, and from Windows 8.1 on, log entries (HvLE) whose sequence number is
    at least the hive's hold changes the hive file does not have yet. Editing such a hive and writing it back
    as clean loses them (Windows would not replay the logs against a hive that says clean)."""
    with open(path, "rb") as handle:
        base = handle.read(_HEADER_SIZE)
    if len(base) < 12 or base[:4] != b"regf":
        raise BakeryError(f"{path}: not a registry hive (no regf base block)")
    primary, secondary = struct.unpack_from("<II", base, 4)
    pending = tuple(log.name for log in (path.with_name(path.name + s) for s in (".LOG1", ".LOG2", ".LOG"))
                    if _log_has_entries_from(log, secondary))
    return HiveState(primary, secondary, pending)


def _log_has_entries_from(log: Path, sequence: int) -> bool:
    """A new-format log (a regf base block, then HvLE entries) with an entry numbered `sequence` or later."""
    try:
        with open(log, "rb") as handle:
            data = handle.read(16 * 1024 * 1024)
    except OSError:
        return False
    offset = 512
    while offset + 32 <= len(data) and data[offset:offset + 4] == b"HvLE":
        size, _flags, number = struct.unpack_from("<III", data, offset + 4)
        if number >= sequence:
            return True
        if size < 40 or size % 512:
            break
        offset += size
    return False


# -- a new, empty hive -------------------------------------------------------------------------------------

_HEADER_SIZE = 4096
_HBIN_SIZE = 4096
_FIRST_CELL = 0x20  # cell offsets count from the first hbin; its 32-byte header comes first


def empty_hive(path: Path, root_name: str = "ROOT", *, timestamp: int = 0) -> None:
    """A valid regf file holding only a root key: hivex can open and extend it, but cannot create it.

    Layout: the 4096-byte base block, then one 4096-byte hbin holding the root nk cell first (some
    readers assume it is), its sk (security) cell, and one free cell covering the rest.
    """
    name = root_name.encode("ascii")
    nk_size = (0x4C + len(name) + 4 + 7) // 8 * 8
    sk_offset = _FIRST_CELL + nk_size
    nk_body = (
        b"nk" + struct.pack("<H", 0x2C)  # flags: root key, compressed (ASCII) name
        + struct.pack("<Q", timestamp) + b"\0" * 4  # last write time, access bits
        + struct.pack("<I", 0xFFFFFFFF)  # parent (none for the root)
        + struct.pack("<II", 0, 0)  # subkey counts (stable, volatile)
        + struct.pack("<II", 0xFFFFFFFF, 0xFFFFFFFF)  # subkey lists
        + struct.pack("<I", 0)  # value count
        + struct.pack("<I", 0xFFFFFFFF)  # value list
        + struct.pack("<I", sk_offset)  # security cell
        + struct.pack("<I", 0xFFFFFFFF)  # class name
        + struct.pack("<IIIII", 0, 0, 0, 0, 0)  # largest name/class/value sizes, workvar
        + struct.pack("<HH", len(name), 0) + name
    )
    descriptor = _minimal_security_descriptor()
    sk_body = b"sk" + b"\0\0" + struct.pack("<IIII", sk_offset, sk_offset, 1, len(descriptor)) + descriptor
    cells = _cell(nk_body, nk_size) + _cell(sk_body, 0)
    used = _FIRST_CELL + len(cells)
    free = struct.pack("<i", _HBIN_SIZE - used) + b"\0" * (_HBIN_SIZE - used - 4)
    hbin = b"hbin" + struct.pack("<IIII", 0, _HBIN_SIZE, 0, 0) + struct.pack("<Q", timestamp) + b"\0" * 4
    header = bytearray(_HEADER_SIZE)
    struct.pack_into("<4sIIQIIII", header, 0, b"regf", 1, 1, timestamp, 1, 3, 0, 1)
    struct.pack_into("<III", header, 0x24, _FIRST_CELL, _HBIN_SIZE, 1)  # root cell, hbins size, clustering
    checksum = 0
    for (dword,) in struct.iter_unpack("<I", bytes(header[:0x1FC])):
        checksum ^= dword
    struct.pack_into("<I", header, 0x1FC, checksum)
    Path(path).write_bytes(bytes(header) + hbin + cells + free)


def _cell(body: bytes, size: int) -> bytes:
    size = max(size, (len(body) + 4 + 7) // 8 * 8)
    return struct.pack("<i", -size) + body + b"\0" * (size - 4 - len(body))


def _minimal_security_descriptor() -> bytes:
    """Self-relative SECURITY_DESCRIPTOR: owner and group BUILTIN\\Administrators, no DACL/SACL."""
    admins = bytes([1, 2, 0, 0, 0, 0, 0, 5]) + struct.pack("<II", 32, 544)
    header = struct.pack("<BBHIIII", 1, 0, 0x8000, 20, 20 + len(admins), 0, 0)
    return header + admins + admins


FILETIME_UNIX_OFFSET = 11644473600  # seconds from 1601-01-01 (Windows' epoch) to 1970-01-01


def filetime(unix_seconds: float) -> int:
    return int((unix_seconds + FILETIME_UNIX_OFFSET) * 10_000_000)


def timestamps(path: Path) -> dict[int, int]:
    """Every last-written time in a hive by its offset: the base block's, each hbin's and each key's (nk)."""
    return dict(_stamp_offsets(Path(path).read_bytes()))


def _stamp_offsets(data: bytes):
    yield 0x0C, struct.unpack_from("<Q", data, 0x0C)[0]  # base block: last written
    offset = _HEADER_SIZE
    while offset + 0x20 <= len(data) and data[offset:offset + 4] == b"hbin":
        (hbin_size,) = struct.unpack_from("<I", data, offset + 8)
        if hbin_size < 0x20:
            break
        yield offset + 0x14, struct.unpack_from("<Q", data, offset + 0x14)[0]
        cell = offset + 0x20
        while cell + 4 <= offset + hbin_size:
            (size,) = struct.unpack_from("<i", data, cell)
            if size == 0:
                break
            if size < 0 and data[cell + 4:cell + 6] == b"nk":
                yield cell + 8, struct.unpack_from("<Q", data, cell + 8)[0]  # nk: signature, flags, then the time
            cell += abs(size)
        offset += hbin_size


def pin_timestamps(path: Path, *, before: dict[int, int], to: int) -> int:
    """Rewrite to `to` the last-written times this build wrote: those not in `before` (the hive's stamps
    before the build edited it, from timestamps()) or different from it. Everything else stays byte-equal,
    zeros included: real Windows 10 hives carry zero stamps the bake never touched.

    hivex stamps the current time into the base block and new hbins, and leaves the keys it creates at 0
    (1601-01-01); without this, two bakes of the same inputs differ in those bytes. Returns how many
    stamps were rewritten."""
    data = bytearray(Path(path).read_bytes())
    target = filetime(to)
    changed = 0
    for offset, stamp in list(_stamp_offsets(bytes(data))):
        if before.get(offset) != stamp:
            struct.pack_into("<Q", data, offset, target)
            changed += 1
    if changed:
        checksum = 0
        for (dword,) in struct.iter_unpack("<I", bytes(data[:0x1FC])):
            checksum ^= dword
        struct.pack_into("<I", data, 0x1FC, checksum)
        Path(path).write_bytes(bytes(data))
    return changed


def zero_free_cells(path: Path) -> int:
    """Zero what hivex leaves readable in a hive: the bodies of free cells (deleted keys and values, old copies
    of changed ones) and the bytes after the last hive bin. Allocated cells, cell sizes, bin headers and the
    base block (and its checksum) are untouched, so the hive means exactly what it meant. Returns the bytes
    zeroed."""
    data = bytearray(path.read_bytes())
    if data[:4] != b"regf" or len(data) < 4096:
        raise BakeryError(f"{path}: not a registry hive (no regf base block)")
    end = min(4096 + struct.unpack_from("<I", data, 0x28)[0], len(data))
    zeroed, offset = 0, 4096
    while offset + 32 <= end and data[offset:offset + 4] == b"hbin":
        size = struct.unpack_from("<I", data, offset + 8)[0]
        if size < 32 or offset + size > end:
            break
        cell = offset + 32
        while cell + 4 <= offset + size:
            cell_size = struct.unpack_from("<i", data, cell)[0]
            if cell_size == 0 or cell + abs(cell_size) > offset + size:
                break
            if cell_size > 0:  # free
                zeroed += sum(1 for b in data[cell + 4:cell + cell_size] if b)
                data[cell + 4:cell + cell_size] = bytes(cell_size - 4)
            cell += abs(cell_size)
        offset += size
    zeroed += sum(1 for b in data[end:] if b)
    data[end:] = bytes(len(data) - end)
    path.write_bytes(data)
    return zeroed
