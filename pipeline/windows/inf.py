"""A driver package's INF and catalog, read for the values `pnputil /add-driver` writes into DriverDatabase.

Where each registered value comes from (DriverDatabase\\DriverPackages\\<package>):
- InfName, Catalog: the INF's own file name and its [Version] CatalogFile.
- Provider, and the Strings subkey: the INF's [Version] Provider and its [Strings] section (%tokens% resolved).
- Version: 48 bytes. virt-v2v writes it because Windows-Kernel-Pnp needs it on Windows 10 / Server 2016
  (libguestfs-common, mlcustomize/inject_virtio_win.ml): an 8-byte header (00 FF 09 00, then zeros), the
  device class GUID in its binary (little-endian) form, then zeros. Where virt-v2v leaves zeros this module
  puts the INF's DriverVer: its date as a FILETIME and its version packed as four 16-bit fields, which is
  our reading of that structure, not a documented one; the rest stays zero.
- ImportDate: a FILETIME; the bakery writes the build epoch so a bake stays reproducible.
- SignerName: the subject of the catalog's signing certificate, when the catalog is a PKCS#7 file it can
  read; otherwise the value is left out rather than invented.
- SignerScore: the signature part of Windows' driver rank (setupapi.h's SIGNERSCORE_* constants). Packages
  in real SYSTEM hives whose catalogs Microsoft's Hardware Dev Center signed carry 0x0D000005 (WHQL).
  virtio-win's Windows 10+ packages are attestation-signed through that same portal, so their catalog's
  signer is "Microsoft Windows Hardware Compatibility Publisher" and they rank as WHQL; packages signed
  only by their vendor (virtio-win's Windows 8/8.1 test or Red Hat signatures) rank as Authenticode
  (0x0F000000). An unreadable catalog is taken for the WHQL case, since that is what a real virtio-win
  release ships for every Windows that has a DriverDatabase to write into.
- OemPath: the folder pnputil took the INF from; the bakery's copy in the staging folder.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.windows.registry import filetime

VERSION_HEADER = b"\x00\xff\x09\x00\x00\x00\x00\x00"
SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")
ENTRY = re.compile(r"^\s*([^=;]+?)\s*=\s*(.*?)\s*$")


@dataclass(frozen=True)
class InfFacts:
    name: str
    date: str | None  # MM/DD/YYYY
    version: str | None  # a.b.c.d
    provider: str
    catalog: str | None
    class_guid: str | None
    strings: dict[str, str] = field(default_factory=dict)


def read_inf(path: Path) -> InfFacts:
    sections = _sections(inf_text(path.read_bytes()))
    strings = {k: v.strip('"') for k, v in sections.get("strings", {}).items()}
    version = {k.lower(): _resolve(v, strings) for k, v in sections.get("version", {}).items()}
    date, number = None, None
    if "driverver" in version:
        parts = [p.strip() for p in version["driverver"].split(",")]
        date, number = parts[0], (parts[1] if len(parts) > 1 else None)
    catalog = version.get("catalogfile") or version.get("catalogfile.ntamd64") or version.get("catalogfile.ntx86")
    return InfFacts(path.name, date, number, version.get("provider", ""), catalog, version.get("classguid"), strings)


def inf_text(data: bytes) -> str:
    """An INF's text: Windows' own INFs are mostly UTF-16 with a byte order mark, third-party ones ASCII or UTF-8."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


def _sections(text: str) -> dict[str, dict[str, str]]:
    """Sections by lower-case name; keys keep their case (the Strings subkey shows them as written)."""
    sections: dict[str, dict[str, str]] = {}
    current = None
    for line in text.splitlines():
        line = _uncommented(line)
        if match := SECTION.match(line):
            current = sections.setdefault(match.group(1).strip().lower(), {})
        elif current is not None and (match := ENTRY.match(line)):
            current[match.group(1).strip()] = match.group(2).strip()
    return sections


def _uncommented(line: str) -> str:
    """The line up to a `;` that is not inside a quoted string."""
    quoted = False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            return line[:index]
    return line


def _resolve(value: str, strings: dict[str, str]) -> str:
    lower = {k.lower(): v for k, v in strings.items()}
    return re.sub(r"%([^%]+)%", lambda m: lower.get(m.group(1).lower(), m.group(0)), value).strip('"')


def version_blob(facts: InfFacts, fallback_class_guid: str) -> bytes:
    """The 48-byte Version value (module docstring)."""
    guid = uuid.UUID((facts.class_guid or fallback_class_guid).strip("{}"))
    return VERSION_HEADER + guid.bytes_le + struct.pack("<QQ", _date_filetime(facts.date), _packed(facts.version)) + bytes(8)


def _date_filetime(date: str | None) -> int:
    try:
        month, day, year = (int(p) for p in (date or "").split("/"))
        return filetime(dt.datetime(year, month, day, tzinfo=dt.timezone.utc).timestamp())
    except ValueError:
        return 0


def _packed(version: str | None) -> int:
    fields = [int(p) for p in (version or "").split(".") if p.isdigit()][:4]
    fields += [0] * (4 - len(fields))
    return (fields[0] << 48) | (fields[1] << 32) | (fields[2] << 16) | fields[3]


SIGNERSCORE_WHQL = 0x0D000005
SIGNERSCORE_AUTHENTICODE = 0x0F000000
MICROSOFT_HARDWARE_SIGNERS = ("Microsoft Windows Hardware Compatibility Publisher", "Microsoft Windows")


def signer_score(signer: str | None) -> int:
    """SignerScore for a package whose catalog was signed by `signer` (None: not readable)."""
    if signer is None or signer in MICROSOFT_HARDWARE_SIGNERS:
        return SIGNERSCORE_WHQL
    return SIGNERSCORE_AUTHENTICODE


def signer_name(catalog: Path) -> str | None:
    """The common name of the certificate that signed a catalog (a PKCS#7 SignedData file), if it is one."""
    try:
        from cryptography.hazmat.primitives.serialization import pkcs7
        from cryptography.x509.oid import NameOID

        certificates = pkcs7.load_der_pkcs7_certificates(catalog.read_bytes())
    except (ValueError, OSError, ImportError):
        return None
    issuers = {c.issuer for c in certificates}
    leaves = [c for c in certificates if c.subject not in issuers] or certificates
    names = leaves[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME) if leaves else []
    return str(names[0].value) if names else None
