"""New-format registry transaction logs (.LOG1/.LOG2), written from the format's public description (Maxim
Suhanov, "Windows registry file format specification", sections "Transaction log files" and "New format"),
to build dirty hives the way Windows 8.1 and later leave them after an unclean shutdown.

A log is a 512-byte copy of the hive's base block (file type 6: log, new format), then log entries (HvLE):
signature, entry size (a multiple of 512), the base block flags, a sequence number, the hive bins data size,
the number of dirty pages, hash-1 (Marvin32 of everything after the 40-byte header), hash-2 (Marvin32 of the
entry's first 32 bytes), then (offset, size) references to the dirty pages, relative to the first hbin, and
the pages themselves.
"""

from __future__ import annotations

import struct

REGF_BASE_BLOCK = 4096
PAGE = 4096
MARVIN32_SEED = 0x82EF4D887A4E55C5
_M = 0xFFFFFFFF


def marvin32(data: bytes, seed: int = MARVIN32_SEED) -> int:
    """Microsoft's Marvin32 hash (64-bit result: high word p1, low word p0), as the registry uses it."""
    low, high = seed & _M, seed >> 32

    def rotl(x: int, n: int) -> int:
        return ((x << n) | (x >> (32 - n))) & _M

    def mix(low: int, high: int) -> tuple[int, int]:
        high ^= low
        low = rotl(low, 20)
        low = (low + high) & _M
        high = rotl(high, 9)
        high ^= low
        low = rotl(low, 27)
        low = (low + high) & _M
        high = rotl(high, 19)
        return low, high

    whole = len(data) - len(data) % 4
    for (word,) in struct.iter_unpack("<I", data[:whole]):
        low, high = mix((low + word) & _M, high)
    tail = data[whole:]
    final = 0x80 << (8 * len(tail))
    for index, byte in enumerate(tail):
        final |= byte << (8 * index)
    low, high = mix((low + final) & _M, high)
    low, high = mix(low, high)
    return (high << 32) | low


def dirty_pages(clean: bytes, changed: bytes) -> list[tuple[int, bytes]]:
    """(offset from the first hbin, page) for every 4 KiB page of the hive bins that differs."""
    pages = []
    for start in range(REGF_BASE_BLOCK, len(changed), PAGE):
        page = changed[start:start + PAGE]
        if page != clean[start:start + PAGE]:
            pages.append((start - REGF_BASE_BLOCK, page))
    return pages


def log_entry(sequence: int, hive_bins_size: int, flags: int, pages: list[tuple[int, bytes]]) -> bytes:
    references = b"".join(struct.pack("<II", offset, len(page)) for offset, page in pages)
    body = references + b"".join(page for _, page in pages)
    size = 40 + len(body)
    size += -size % 512
    body += bytes(size - 40 - len(body))
    hash1 = marvin32(body)
    head = b"HvLE" + struct.pack("<IIIII", size, flags, sequence, hive_bins_size, len(pages)) + struct.pack("<Q", hash1)
    return head + struct.pack("<Q", marvin32(head)) + body


def new_format_log(hive: bytes, entries: list[bytes]) -> bytes:
    """The log file: the hive's base block as a log header (file type 6), then the entries."""
    base = bytearray(hive[:512])
    struct.pack_into("<I", base, 0x1C, 6)  # file type: transaction log, new format
    checksum = 0
    for (dword,) in struct.iter_unpack("<I", bytes(base[:0x1FC])):
        checksum ^= dword
    struct.pack_into("<I", base, 0x1FC, checksum)
    return bytes(base) + b"".join(entries)


def sequence_numbers(hive: bytes) -> tuple[int, int]:
    return struct.unpack_from("<II", hive, 4)


def hbins_size(hive: bytes) -> int:
    return struct.unpack_from("<I", hive, 0x28)[0]


def flags(hive: bytes) -> int:
    return struct.unpack_from("<I", hive, 0x90)[0]


def interrupted_write(hive: bytes) -> bytes:
    """The hive as Windows leaves it when a write began and never finished: the primary sequence number
    raised, the secondary not, the base block checksum valid (it is written with the primary number)."""
    data = bytearray(hive)
    primary, _ = sequence_numbers(hive)
    struct.pack_into("<I", data, 4, primary + 1)
    checksum = 0
    for (dword,) in struct.iter_unpack("<I", bytes(data[:0x1FC])):
        checksum ^= dword
    struct.pack_into("<I", data, 0x1FC, checksum)
    return bytes(data)
