"""Validating a rendered manifest into typed data, failing with file, line, field and expectation."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import unicodedata
from pathlib import Path
from typing import Any

from pipeline.common import secrets
from pipeline.common.errors import ManifestError
from pipeline.diskimage.safety import DEFAULT_MAX_VIRTUAL_GIB
from pipeline.manifest.model import (
    DEFAULT_FAMILY_KEYS,
    BakeSpec,
    CanarySpec,
    InstallSpec,
    LifecyclePolicy,
    Manifest,
    ProvisionSpec,
    ProvisionStep,
    ReleasePolicy,
    ScsProfile,
    SecretRef,
    Source,
    TargetSpec,
    UploadSpec,
)
from pipeline.windows.drivers import DEFAULT_SELECTION, DRIVERS

SHA256 = re.compile(r"^[0-9a-f]{64}$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SOURCE_FORMATS = ("raw", "qcow2")
PREVIOUS_POLICIES = ("demote", "hide")
VISIBILITIES = ("public", "community", "shared", "private")
# What Glance itself enforces (glance/api/v2/images.py schema, glance/db/sqlalchemy): checked here, before any
# build, instead of being found by the server after hours of baking.
MAX_NAME = 255  # image name, and each tag
MAX_TAGS = 128  # image_tag_quota's default
MAX_INT32 = 2**31 - 1  # min_disk, min_ram
MAX_PROPERTY_KEY = 255
MAX_PROPERTY_VALUE_BYTES = 65535  # a TEXT column
MAX_VIRTUAL_GIB = 64 * 1024  # the largest image.max_virtual_gib a manifest may set
# Characters that must never reach a published name or property: C0/C1 controls (a bell, an escape) and the
# invisible or direction-changing formatting characters (a right-to-left override makes "w10" read as "01w").
INVISIBLE = frozenset("\u061c\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                      "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff")
ONE_LINE_FIELDS = ("name", "family", "os", "properties", "image", "upstream_provider", "source", "release", "scs")


class _Fields:
    """Typed access to the parsed document that fails with file, line, field and expectation."""

    def __init__(self, path: Path, document: dict, positions: dict[tuple, tuple[Path, int]]):
        self.path, self.document, self.positions = path, document, positions

    def error(self, keys: tuple, expected: str) -> ManifestError:
        file, line = self.positions.get(keys, (self.path, None))
        if line is None:
            for n in range(len(keys) - 1, 0, -1):  # fall back to the enclosing section's line
                file, line = self.positions.get(keys[:n], (self.path, None))
                if line is not None:
                    break
        return ManifestError(str(file), ".".join(str(k) for k in keys), expected, line=line)

    def get(self, *keys: str, kind: type | tuple = str, required: bool = True, default: Any = None) -> Any:
        node: Any = self.document
        for depth, key in enumerate(keys):
            if isinstance(node, list) and isinstance(key, int):  # an item of a list: steps.0.name
                node = node[key] if key < len(node) else None
                if node is None:
                    if required:
                        raise self.error(keys[:depth + 1], f"required field is missing{_expected(kind)}")
                    return default
                continue
            if not isinstance(node, dict):
                raise self.error(keys[:depth], "expected a mapping")
            if key not in node or node[key] is None:
                if required:
                    raise self.error(keys, f"required field is missing{_expected(kind)}")
                return default
            node = node[key]
        if kind is str and isinstance(node, (int, float, bool, dt.date)):
            raise self.error(keys, f"expected a string, got {type(node).__name__} {node!r} (quote it in YAML)")
        if (kind is int and isinstance(node, bool)) or not isinstance(node, kind):
            raise self.error(keys, f"expected {_kind_name(kind)}, got {type(node).__name__} {node!r}")
        return node

    def choice(self, *keys: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(*keys, required=False, default=default)
        if value not in choices:
            raise self.error(keys, f"expected one of {', '.join(choices)}, got {value!r}")
        return value


def _kind_name(kind: type | tuple) -> str:
    names = {str: "a string", int: "an integer", dict: "a mapping", list: "a list", bool: "true or false"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _expected(kind: type | tuple) -> str:
    return f" (expected {_kind_name(kind)})"


KNOWN_TOP_LEVEL = {"name", "family", "os", "source", "properties", "image", "release", "upstream_provider", "lint", "bake",
                   "install", "upload", "targets", "scs", "canary", "provision"}
RELEASE_KEYS = ("family_properties", "previous", "lifecycle")
LIFECYCLE_DAYS = ("hide_after_days", "deactivate_after_days", "delete_after_days")  # in the order they must come
IN_USE_CHECKS = ("servers", "volumes", "members")
HIDE_AS = ("hidden", "community")
# SCS-0102's vocabularies (the standard's tables), checked here so a typo is not published as a promise.
REPLACE_FREQUENCIES = ("yearly", "quarterly", "monthly", "weekly", "daily", "critical_bug", "never")
OS_PURPOSES = ("generic", "minimal", "k8snode", "gpu", "network", "custom")
UUID_VALIDITY = re.compile(r"^(none|notice|forever|last-[1-9][0-9]*|\d{4}-\d{2}-\d{2})$")
PROVIDED_UNTIL = re.compile(r"^(none|notice|\d{4}-\d{2}-\d{2})$")
UPLOAD_METHODS = ("auto", "direct", "glance-direct", "web-download")
STAGE_FORMATS = ("auto", "raw", "qcow2")
STORE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")
CLOUD_NAME = re.compile(r"^[A-Za-z0-9_.@:-]{1,255}$")


def validate(path: Path, document: dict, positions: dict, context: dict[str, str]) -> Manifest:
    fields = _Fields(path, document, positions)
    for key in document:
        if key not in KNOWN_TOP_LEVEL:
            raise fields.error((key,), f"unknown field; expected one of {', '.join(sorted(KNOWN_TOP_LEVEL))}")
    _check_characters(fields, document, ())

    if ("source" in document) == ("install" in document):
        raise fields.error(("install",) if "install" in document else ("source",),
                           "expected exactly one of source (a disk image to start from) or install (installation media)")
    family = fields.get("family", kind=dict)
    for key in DEFAULT_FAMILY_KEYS:
        fields.get("family", key)
    for key in family:
        fields.get("family", key)  # every family value is a string

    os_info = {key: fields.get("os", key) for key in ("type", "version")}
    os_info["name"] = fields.get("os", "name", required=False, default="WINDOWS")

    properties = fields.get("properties", kind=dict, required=False, default={})
    _known_keys(fields, ("release",), RELEASE_KEYS)
    release_keys = fields.get("release", "family_properties", kind=list, required=False, default=list(family))
    for index, key in enumerate(release_keys):
        if not isinstance(key, str) or key not in family:
            raise fields.error(("release", "family_properties", index), f"expected a key of family ({', '.join(family)}), got {key!r}")

    min_disk = fields.get("image", "min_disk", kind=int, required=False)
    min_ram = fields.get("image", "min_ram", kind=int, required=False, default=0)
    for keys, value in ((("image", "min_disk"), min_disk), (("image", "min_ram"), min_ram)):
        if value is not None and not 0 <= value <= MAX_INT32:
            raise fields.error(keys, f"expected an integer from 0 to {MAX_INT32} (what Glance stores), got {value}")
    tags = fields.get("image", "tags", kind=list, required=False, default=[])
    if len(tags) > MAX_TAGS:
        raise fields.error(("image", "tags"), f"{len(tags)} tags; Glance takes at most {MAX_TAGS}")
    for index, tag in enumerate(tags):
        if not isinstance(tag, str) or not tag:
            raise fields.error(("image", "tags", index), f"expected a non-empty string, got {tag!r}")
        if len(tag) > MAX_NAME:
            raise fields.error(("image", "tags", index), f"a tag of {len(tag)} characters; Glance takes at most {MAX_NAME}")
    name = fields.get("name")
    if not name.strip():
        raise fields.error(("name",), "is empty; expected the image's name, as users will see it in Glance")
    if len(name) > MAX_NAME:
        raise fields.error(("name",), f"{len(name)} characters; Glance takes at most {MAX_NAME}")
    _check_properties(fields, properties)
    max_virtual_gib = fields.get("image", "max_virtual_gib", kind=int, required=False, default=DEFAULT_MAX_VIRTUAL_GIB)
    if not 1 <= max_virtual_gib <= MAX_VIRTUAL_GIB:
        raise fields.error(("image", "max_virtual_gib"), f"expected an integer from 1 to {MAX_VIRTUAL_GIB}, got {max_virtual_gib}")

    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return Manifest(
        path=path,
        name=name,
        release_date=context["release_date"],
        family=dict(family),
        os=os_info,
        source=_source(fields, path) if "source" in document else None,
        properties=dict(properties),
        visibility=fields.choice("image", "visibility", choices=VISIBILITIES, default="public"),
        min_ram=min_ram,
        min_disk=min_disk,
        max_virtual_gib=max_virtual_gib,
        tags=tuple(tags),
        release=ReleasePolicy(
            family_keys=tuple(release_keys),
            previous=fields.choice("release", "previous", choices=PREVIOUS_POLICIES, default="demote"),
            lifecycle=_lifecycle(fields),
        ),
        upstream_provider=fields.get("upstream_provider", required=False, default=""),
        lint_suppress=_suppressions(fields),
        bake=_bake(fields, path),
        install=_install(fields, path) if "install" in document else None,
        canary=_canary(fields, path),
        provision=_provision(fields, path) if "provision" in document else None,
        upload=_upload(fields, ("upload",)),
        targets=_targets(fields),
        scs=_scs(fields) if "scs" in document else None,
        variables={k: v for k, v in context.items() if k != "release_date"},
        rendered=canonical,
        positions=positions,
    )


def _check_characters(fields: _Fields, node: Any, keys: tuple) -> None:
    """No control or invisible formatting character anywhere; not even a line break in what gets published."""
    if isinstance(node, dict):
        for key, value in node.items():
            _check_characters(fields, key, keys)
            _check_characters(fields, value, (*keys, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _check_characters(fields, item, (*keys, index))
    elif isinstance(node, str):
        published = bool(keys[:1]) and keys[0] in ONE_LINE_FIELDS
        allowed = "" if published else "\n\t"
        for position, char in enumerate(node):
            if (unicodedata.category(char) == "Cc" and char not in allowed) or char in INVISIBLE:
                what = unicodedata.name(char, "a control character")
                raise fields.error(keys, f"contains U+{ord(char):04X} ({what}) at character {position + 1}: refused, it would be "
                                   "published as it is; remove it")
            if published and ord(char) > 0xFFFF:  # glance/common/utils.py no_4byte_params: HTTP 400 on create or update
                what = unicodedata.name(char, "a character outside the Basic Multilingual Plane")
                raise fields.error(keys, f"contains U+{ord(char):04X} ({what}) at character {position + 1}: Glance refuses 4-byte "
                                   "UTF-8 characters in every image field; remove it")


def _check_properties(fields: _Fields, properties: dict) -> None:
    for key, value in properties.items():
        if len(str(key)) > MAX_PROPERTY_KEY:
            raise fields.error(("properties", key), f"a property name of {len(str(key))} characters; Glance takes at most {MAX_PROPERTY_KEY}")
        if isinstance(value, str) and len(value.encode()) > MAX_PROPERTY_VALUE_BYTES:
            raise fields.error(("properties", key), f"a value of {len(value.encode()):,} bytes; Glance stores at most {MAX_PROPERTY_VALUE_BYTES:,}")


def _upload(fields: _Fields, section: tuple, base: UploadSpec | None = None) -> UploadSpec:
    """upload: (or a target's upload:), over `base` (the manifest's own, for a target)."""
    base = base or UploadSpec()
    if fields.get(*section, kind=dict, required=False) is None:
        return base
    known = {"method", "stores", "all_stores_must_succeed", "stage_format", "web_download_url"}
    for key in fields.get(*section, kind=dict):
        if key not in known:
            raise fields.error((*section, key), f"unknown field; expected one of {', '.join(sorted(known))}")
    stores, all_stores = base.stores, base.all_stores
    raw_stores = fields.get(*section, "stores", kind=(list, str), required=False)
    if isinstance(raw_stores, str):
        if raw_stores != "all":
            raise fields.error((*section, "stores"), f"expected a list of store names or all, got {raw_stores!r}")
        stores, all_stores = (), True
    elif raw_stores is not None:
        for index, store in enumerate(raw_stores):
            if not isinstance(store, str) or not STORE_NAME.fullmatch(store):
                raise fields.error((*section, "stores", index), f"expected a store name, got {store!r}")
        stores, all_stores = tuple(raw_stores), False
    url = fields.get(*section, "web_download_url", required=False, default=base.web_download_url)
    if url is not None and not re.match(r"^https?://", url):
        raise fields.error((*section, "web_download_url"), f"expected an http(s):// URL, got {url!r}")
    if url:
        secrets.register_url(url)
    method = fields.choice(*section, "method", choices=UPLOAD_METHODS, default=base.method)
    if method == "web-download" and not url:
        raise fields.error((*section, "web_download_url"), "required with method: web-download (where Glance fetches the image)")
    return UploadSpec(
        method=method, stores=stores, all_stores=all_stores,
        all_stores_must_succeed=fields.get(*section, "all_stores_must_succeed", kind=bool, required=False,
                                           default=base.all_stores_must_succeed),
        stage_format=fields.choice(*section, "stage_format", choices=STAGE_FORMATS, default=base.stage_format),
        web_download_url=url,
    )


def _targets(fields: _Fields) -> tuple[TargetSpec, ...]:
    entries = fields.get("targets", kind=list, required=False, default=[])
    base = _upload(fields, ("upload",))
    targets, seen = [], set()
    for index, entry in enumerate(entries):
        keys = ("targets", index)
        if isinstance(entry, str):
            entry = {"cloud": entry}
        if not isinstance(entry, dict):
            raise fields.error(keys, f"expected a cloud name or a mapping with cloud:, got {entry!r}")
        for key in entry:
            if key not in ("cloud", "visibility", "upload"):
                raise fields.error((*keys, key), "unknown field; expected cloud, visibility or upload")
        cloud = entry.get("cloud")
        if not isinstance(cloud, str) or not CLOUD_NAME.fullmatch(cloud):
            raise fields.error((*keys, "cloud"), f"expected a cloud name from clouds.yaml, got {cloud!r}")
        if cloud in seen:
            raise fields.error((*keys, "cloud"), f"{cloud} is listed twice")
        seen.add(cloud)
        visibility = entry.get("visibility")
        if visibility is not None and visibility not in VISIBILITIES:
            raise fields.error((*keys, "visibility"), f"expected one of {', '.join(VISIBILITIES)}, got {visibility!r}")
        targets.append(TargetSpec(cloud, visibility, _upload(fields, (*keys, "upload"), base) if "upload" in entry else None))
    return tuple(targets)


def _known_keys(fields: _Fields, section: tuple, known: tuple[str, ...]) -> None:
    for key in fields.get(*section, kind=dict, required=False, default={}):
        if key not in known:
            raise fields.error((*section, key), f"unknown field; expected one of {', '.join(known)}")


def _lifecycle(fields: _Fields) -> LifecyclePolicy:
    section = ("release", "lifecycle")
    _known_keys(fields, section, ("keep_visible", *LIFECYCLE_DAYS, "hide_as", "exempt", "in_use_checks"))
    counts = {key: fields.get(*section, key, kind=int, required=False) for key in ("keep_visible", *LIFECYCLE_DAYS)}
    for key, value in counts.items():
        if value is not None and not 0 <= value <= 36500:
            raise fields.error((*section, key), f"expected an integer from 0 to 36500, got {value}")
    given = [(key, counts[key]) for key in LIFECYCLE_DAYS if counts[key] is not None]
    for (earlier, first), (later, second) in zip(given, given[1:]):
        if second < first:
            raise fields.error((*section, later), f"expected at least {earlier} ({first}): a release is hidden, then deactivated, "
                               f"then deleted, got {second}")
    _known_keys(fields, (*section, "exempt"), ("tags", "properties"))
    tags = fields.get(*section, "exempt", "tags", kind=list, required=False, default=[])
    for index, tag in enumerate(tags):
        if not isinstance(tag, str) or not tag:
            raise fields.error((*section, "exempt", "tags", index), f"expected a tag, got {tag!r}")
    properties = fields.get(*section, "exempt", "properties", kind=dict, required=False, default={})
    for key in properties:
        fields.get(*section, "exempt", "properties", key)
    checks = fields.get(*section, "in_use_checks", kind=list, required=False, default=list(IN_USE_CHECKS))
    for index, check in enumerate(checks):
        if check not in IN_USE_CHECKS:
            raise fields.error((*section, "in_use_checks", index), f"expected one of {', '.join(IN_USE_CHECKS)}, got {check!r}")
    return LifecyclePolicy(**counts, hide_as=fields.choice(*section, "hide_as", choices=HIDE_AS, default="hidden"),
                           exempt_tags=tuple(tags), exempt_properties=tuple(sorted(properties.items())),
                           in_use_checks=tuple(dict.fromkeys(checks)))


def _scs(fields: _Fields) -> ScsProfile:
    """scs: the SCS-0102 promises of the family, in the standard's own vocabulary."""
    section = ("scs",)
    known = ("replace_frequency", "provided_until", "uuid_validity", "image_source", "image_description",
             "image_original_user", "os_purpose", "hotfix_hours", "patchlevel")
    _known_keys(fields, section, known)
    promises = {}
    for key, pattern, what in (("uuid_validity", UUID_VALIDITY, "none, notice, forever, last-N or a YYYY-MM-DD date"),
                               ("provided_until", PROVIDED_UNTIL, "none, notice or a YYYY-MM-DD date")):
        value = fields.get(*section, key, kind=(str, dt.date))  # an unquoted 2029-01-09 is a YAML date: the date meant
        value = value.isoformat() if isinstance(value, dt.date) else value
        if not pattern.fullmatch(value) or (value[:1].isdigit() and not _is_date(value)):
            raise fields.error((*section, key), f"expected {what}, got {value!r}")
        promises[key] = value
    source = fields.get(*section, "image_source")
    if source != "private" and not re.fullmatch(r"(https?|ftps?)://\S+", source):
        raise fields.error((*section, "image_source"), f"expected a URL or private, got {source!r}")
    hotfix_hours = _integers_in_range(fields, section, (("hotfix_hours", None, 0, 24 * 366),))["hotfix_hours"]
    name = fields.get("name")
    last = name.rsplit(" ", 1)[-1] if " " in name.strip() else ""
    if last.lower() in ("old", "prev") or re.fullmatch(r"[\[(]?\d{4}-?\d{2}-?\d{2}[\])]?", last):
        raise fields.error(("name",), f"{name!r} ends in {last!r}: with scs:, the current release carries the family's plain name "
                           "(SCS-0102's checker finds an outdated image's replacement by its name without the last word); the "
                           "bakery renames superseded releases with their date")
    return ScsProfile(
        replace_frequency=fields.choice(*section, "replace_frequency", choices=REPLACE_FREQUENCIES,
                                        default=fields.get(*section, "replace_frequency")),
        provided_until=promises["provided_until"], uuid_validity=promises["uuid_validity"],
        image_source=source, image_description=fields.get(*section, "image_description"),
        image_original_user=fields.get(*section, "image_original_user"),
        os_purpose=fields.choice(*section, "os_purpose", choices=OS_PURPOSES, default="generic"),
        hotfix_hours=hotfix_hours, patchlevel=fields.get(*section, "patchlevel", required=False),
    )


def _is_date(value: str) -> bool:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _suppressions(fields: _Fields) -> dict[str, str]:
    """Rule ids with the reason each is suppressed; that the ids exist is checked where the rules live."""
    suppress = fields.get("lint", "suppress", kind=dict, required=False, default={})
    for rule_id in suppress:
        reason = fields.get("lint", "suppress", rule_id)
        if not reason.strip():
            raise fields.error(("lint", "suppress", rule_id), "a suppression needs a reason")
    return dict(suppress)


def _source(fields: _Fields, manifest_path: Path, section: tuple[str, ...] = ("source",), *, formats: bool = True) -> Source:
    """A pinned input: exactly one of path (relative to the manifest) or url, and its sha256."""
    fields.get(*section, kind=dict)
    location_path = fields.get(*section, "path", required=False)
    location_url = fields.get(*section, "url", required=False)
    if bool(location_path) == bool(location_url):
        raise fields.error(section, "expected exactly one of path or url")
    sha256 = fields.get(*section, "sha256", required=False)
    if sha256 is None:
        raise fields.error((*section, "sha256"), "required pin is missing: expected the file's sha256 (64 hex digits)")
    if not SHA256.fullmatch(sha256.lower()):
        raise fields.error((*section, "sha256"), f"expected 64 hex digits, got {sha256!r}")
    source_format = fields.get(*section, "format", required=False) if formats else None
    if source_format is not None and source_format not in SOURCE_FORMATS:
        raise fields.error((*section, "format"), f"expected one of {', '.join(SOURCE_FORMATS)}, got {source_format!r}")
    if location_url:
        secrets.register_url(location_url)
        if not re.match(r"^(https?|file)://", location_url):
            raise fields.error((*section, "url"), f"expected an http(s):// or file:// URL, got {location_url!r}")
        location = location_url
    else:
        location = str((manifest_path.parent / location_path).resolve())
    return Source(location=location, sha256=sha256.lower(), format=source_format, field=".".join(str(k) for k in section))


def _bake(fields: _Fields, manifest_path: Path) -> BakeSpec | None:
    if fields.get("bake", kind=dict, required=False) is None:
        return None
    drivers = fields.get("bake", "drivers", kind=list, required=False, default=list(DEFAULT_SELECTION))
    for index, name in enumerate(drivers):
        if name not in DRIVERS:
            raise fields.error(("bake", "drivers", index), f"unknown virtio driver {name!r}; expected one of {', '.join(DRIVERS)}")
    elements = fields.get("bake", "elements", kind=list, required=False, default=[])
    paths = fields.get("bake", "elements_path", kind=list, required=False, default=[])
    for key, values in (("elements", elements), ("elements_path", paths)):
        for index, value in enumerate(values):
            if not isinstance(value, str) or not value:
                raise fields.error(("bake", key, index), f"expected a non-empty string, got {value!r}")
    qcow2 = fields.get("bake", "qcow2", kind=bool, required=False, default=False)
    epoch = fields.get("bake", "epoch", required=False)
    if epoch is not None and not ISO_DATE.fullmatch(epoch):
        raise fields.error(("bake", "epoch"), f"expected an ISO date YYYY-MM-DD (quoted), got {epoch!r}")
    return BakeSpec(
        virtio_win=_source(fields, manifest_path, ("bake", "virtio_win"), formats=False),
        drivers=tuple(drivers),
        elements=tuple(elements),
        elements_path=tuple(str((manifest_path.parent / p).resolve()) for p in paths),
        qcow2=qcow2,
        epoch=epoch,
    )


# The limits of a VM the bakery runs (install, provisioning, canary): what a build host can give one guest,
# and how long anything may take, so that a typo (or 10**30) is refused here, not by QEMU or never.
MEMORY_MIB = ("memory_mib", 4096, 256, 1024 * 1024)  # key, default, lowest, highest (1 TiB)
CPUS = ("cpus", 2, 1, 128)
MAX_REBOOTS = 100
MAX_MINUTES = 7 * 24 * 60  # a week
TCG_FACTOR = ("tcg_timeout_factor", 20, 100)

INSTALL_WINDOWS = ("w7", "2k8R2", "w8.1", "2k12R2", "w10", "2k16", "2k19", "2k22", "w11", "2k25")
FIRMWARES = ("bios", "uefi")
MACHINES = ("q35", "pc")
DISK_BUSES = ("virtio-blk", "virtio-scsi")
LANGUAGE = re.compile(r"^[a-z]{2,3}-[A-Z][A-Za-z]{1,3}$")


def _install(fields: _Fields, manifest_path: Path) -> InstallSpec:
    section = ("install",)
    fields.get(*section, kind=dict)
    fields.get(*section, "windows")
    windows = fields.choice(*section, "windows", choices=INSTALL_WINDOWS, default="")
    index = fields.get(*section, "image", "index", kind=int, required=False)
    name = fields.get(*section, "image", "name", required=False)
    if (index is None) == (name is None):
        raise fields.error((*section, "image"), "expected exactly one of index or name (the image in install.wim)")
    if index is not None and not 1 <= index <= 255:
        raise fields.error((*section, "image", "index"), f"expected an index from 1 to 255, got {_number(index)}")
    firmware = fields.choice(*section, "firmware", choices=FIRMWARES, default="uefi")
    secure_boot = fields.get(*section, "secure_boot", kind=bool, required=False, default=False)
    tpm = fields.get(*section, "tpm", kind=bool, required=False, default=False)
    machine = fields.choice(*section, "machine", choices=MACHINES, default="q35")
    for flag, value in (("secure_boot", secure_boot), ("tpm", tpm)):
        if value and firmware != "uefi":
            raise fields.error((*section, flag), "needs firmware: uefi")
    if secure_boot and machine != "q35":
        raise fields.error((*section, "machine"), "Secure Boot needs machine: q35 (SMM)")
    language = fields.get(*section, "language", required=False, default="en-US")
    if not LANGUAGE.fullmatch(language):
        raise fields.error((*section, "language"), f"expected a language tag such as en-US, got {language!r}")
    numbers = _integers_in_range(fields, section, (("disk_size_gib", 40, 1, MAX_VIRTUAL_GIB), MEMORY_MIB, CPUS))
    timing = _numbers_in_range(fields, section, (("timeout_minutes", 240, MAX_MINUTES), TCG_FACTOR))
    virtio_section = (*section, "virtio_win") if fields.get(*section, "virtio_win", kind=dict, required=False) else ("bake", "virtio_win")
    if virtio_section[0] == "bake" and fields.get("bake", "virtio_win", kind=dict, required=False) is None:
        raise fields.error((*section, "virtio_win"), "required pin is missing: the virtio-win ISO whose drivers Setup loads")
    return InstallSpec(
        media=_source(fields, manifest_path, (*section, "media"), formats=False),
        virtio_win=_source(fields, manifest_path, virtio_section, formats=False),
        windows=windows,
        image_index=index,
        image_name=name,
        edition=fields.get(*section, "edition"),
        product_key=_product_key(fields, manifest_path),
        administrator_password=_secret_ref(fields, manifest_path, (*section, "administrator_password")),
        language=language,
        timezone=fields.get(*section, "timezone", required=False, default="UTC"),
        firmware=firmware,
        secure_boot=secure_boot,
        tpm=tpm,
        machine=machine,
        disk_bus=fields.choice(*section, "disk_bus", choices=DISK_BUSES, default="virtio-blk"),
        boot_keypress=fields.get(*section, "boot_keypress", kind=bool, required=False, default=firmware == "uefi"),
        config_files=_config_files(fields, manifest_path),
        ovmf_code=_optional_path(fields, manifest_path, (*section, "ovmf", "code")),
        ovmf_vars=_optional_path(fields, manifest_path, (*section, "ovmf", "vars")),
        **numbers,
        **timing,
    )


STEP_KINDS = ("powershell", "cmd", "msi", "exe", "msu")
STEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
KB = re.compile(r"^KB[0-9]{6,8}$")
PROVISION_KEYS = ("steps", "windows_update", "cloudbase_init", "max_reboots", "timeout_minutes", "tcg_timeout_factor", "disk_bus",
                  "memory_mib", "cpus", "sysprep")
STEP_KEYS = (*STEP_KINDS, "name", "arguments", "reboot", "repeat")


def _provision(fields: _Fields, manifest_path: Path) -> ProvisionSpec:
    section = ("provision",)
    fields.get(*section, kind=dict)
    _known_keys(fields, section, PROVISION_KEYS)
    steps: list[ProvisionStep] = []
    update = fields.get(*section, "windows_update", kind=dict, required=False, default={})
    exclude = fields.get(*section, "windows_update", "exclude_kbs", kind=list, required=False, default=[])
    for index, kb in enumerate(exclude):
        if not isinstance(kb, str) or not KB.fullmatch(kb):
            raise fields.error((*section, "windows_update", "exclude_kbs", index), f"expected a KB number such as KB5034441, got {kb!r}")
    if update and fields.get(*section, "windows_update", "enabled", kind=bool, required=False, default=True):
        rounds = fields.get(*section, "windows_update", "max_rounds", kind=int, required=False, default=3)
        if not 1 <= rounds <= 10:
            raise fields.error((*section, "windows_update", "max_rounds"), f"expected 1 to 10 rounds, got {rounds}")
        steps += [ProvisionStep(f"windows-update-{n}", "windows-update", None, reboot=True) for n in range(1, rounds + 1)]
    for index, _ in enumerate(fields.get(*section, "steps", kind=list, required=False, default=[])):
        steps.append(_provision_step(fields, manifest_path, (*section, "steps", index)))
    if fields.get(*section, "cloudbase_init", kind=dict, required=False):
        steps.append(ProvisionStep("cloudbase-init", "cloudbase-init",
                                   _source(fields, manifest_path, (*section, "cloudbase_init", "msi"), formats=False),
                                   config=_source(fields, manifest_path, (*section, "cloudbase_init", "config"), formats=False)))
    names = [step.name for step in steps]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate:
        raise fields.error((*section, "steps"), f"step names must be unique; {duplicate!r} is used twice")
    if not steps:
        raise fields.error(section, "expected at least one of steps, windows_update or cloudbase_init")
    numbers = _integers_in_range(fields, section, (("max_reboots", 10, 0, MAX_REBOOTS), MEMORY_MIB, CPUS))
    timing = _numbers_in_range(fields, section, (("timeout_minutes", 120, MAX_MINUTES), TCG_FACTOR))
    return ProvisionSpec(steps=tuple(steps), exclude_kbs=tuple(exclude),
                         disk_bus=fields.choice(*section, "disk_bus", choices=("sata", *DISK_BUSES), default="sata"),
                         sysprep=fields.get(*section, "sysprep", kind=bool, required=False, default=True), **numbers, **timing)


def _provision_step(fields: _Fields, manifest_path: Path, keys: tuple) -> ProvisionStep:
    fields.get(*keys, kind=dict)
    _known_keys(fields, keys, STEP_KEYS)
    kinds = [kind for kind in STEP_KINDS if kind in fields.get(*keys, kind=dict)]
    if len(kinds) != 1:
        raise fields.error(keys, f"expected exactly one of {', '.join(STEP_KINDS)} (the pinned file the step runs)")
    name = fields.get(*keys, "name")
    if not STEP_NAME.fullmatch(name):
        raise fields.error((*keys, "name"), f"expected 1 to 40 letters, digits, - or _, got {name!r}")
    arguments = fields.get(*keys, "arguments", required=False, default="")
    if any(ch in arguments for ch in "\t\r\n"):
        raise fields.error((*keys, "arguments"), "expected one line without tabs")
    return ProvisionStep(name, kinds[0], _source(fields, manifest_path, (*keys, kinds[0]), formats=False), arguments,
                         reboot=fields.get(*keys, "reboot", kind=bool, required=False, default=False),
                         repeat=fields.get(*keys, "repeat", kind=bool, required=False, default=False))


CANARY_READY = ("guest-agent", "serial-marker")
CANARY_KEYS = ("enabled", "ready", "marker", "timeout_minutes", "tcg_timeout_factor", "max_reboots", "memory_mib", "cpus",
               "nova", "ovmf")


def _canary(fields: _Fields, manifest_path: Path) -> CanarySpec | None:
    section = ("canary",)
    if fields.get(*section, kind=dict, required=False) is None:
        return None
    _known_keys(fields, section, CANARY_KEYS)
    if not fields.get(*section, "enabled", kind=bool, required=False, default=True):
        return None
    marker = fields.get(*section, "marker", required=False, default="BAKERY-READY")
    if not re.fullmatch(r"[\x21-\x7e][\x20-\x7e]{2,79}", marker):
        raise fields.error((*section, "marker"), f"expected 3 to 80 printable ASCII characters, got {marker!r}")
    numbers = _integers_in_range(fields, section, (("max_reboots", 3, 0, MAX_REBOOTS), CPUS, ("memory_mib", None, *MEMORY_MIB[2:])))
    timing = _numbers_in_range(fields, section, (("timeout_minutes", 15, MAX_MINUTES), TCG_FACTOR))
    return CanarySpec(
        ready=fields.choice(*section, "ready", choices=CANARY_READY, default="guest-agent"),
        marker=marker,
        nova=fields.get(*section, "nova", required=False, default="master"),
        ovmf_code=_optional_path(fields, manifest_path, (*section, "ovmf", "code")),
        ovmf_vars=_optional_path(fields, manifest_path, (*section, "ovmf", "vars")),
        **numbers,
        **timing,
    )


def _integers_in_range(fields: _Fields, section: tuple, limits: tuple[tuple[str, int | None, int, int], ...]) -> dict[str, int | None]:
    """Optional integer settings: (key, default, lowest, highest) each."""
    found = {}
    for key, default, low, high in limits:
        found[key] = fields.get(*section, key, kind=int, required=False, default=default)
        if found[key] is not None and not low <= found[key] <= high:
            raise fields.error((*section, key), f"expected an integer from {low:,} to {high:,}, got {_number(found[key])}")
    return found


def _numbers_in_range(fields: _Fields, section: tuple, limits: tuple[tuple[str, float, float], ...]) -> dict[str, float]:
    """Optional positive settings (minutes, factors): (key, default, highest) each; NaN and infinity are no numbers."""
    found = {}
    for key, default, high in limits:
        value = fields.get(*section, key, kind=(int, float), required=False, default=default)
        if isinstance(value, bool) or not math.isfinite(value) or not 0 < value <= high:
            raise fields.error((*section, key), f"expected a number above 0 and at most {high:,}, got {_number(value)}")
        found[key] = value
    return found


def _number(value: int | float) -> str:
    """A number as an error shows it: 10**30 is not printed in full."""
    text = repr(value)
    return text if len(text) <= 24 else f"{value:.3e}"


def _optional_path(fields: _Fields, manifest_path: Path, keys: tuple[str, ...]) -> str | None:
    value = fields.get(*keys, required=False)
    return str((manifest_path.parent / value).resolve()) if value else None


def _product_key(fields: _Fields, manifest_path: Path) -> str | SecretRef | None:
    keys = ("install", "product_key")
    value = fields.get(*keys, kind=(str, dict), required=False, default="kms")
    if isinstance(value, dict):
        return _secret_ref(fields, manifest_path, keys)
    if value not in ("kms", "none"):
        raise fields.error(keys, f"expected kms, none, or {{file: PATH}} / {{env: NAME}} (never the key itself), got {value!r}")
    return None if value == "none" else value


def _secret_ref(fields: _Fields, manifest_path: Path, keys: tuple[str, ...]) -> SecretRef:
    fields.get(*keys, kind=dict)
    file = fields.get(*keys, "file", required=False)
    env = fields.get(*keys, "env", required=False)
    if bool(file) == bool(env):
        raise fields.error(keys, "expected exactly one of file (a path) or env (a variable name); secrets never go in a manifest")
    if env and not VARIABLE.fullmatch(env):
        raise fields.error((*keys, "env"), f"expected an environment variable name, got {env!r}")
    return SecretRef(file=str((manifest_path.parent / file).resolve()) if file else None, env=env, field=".".join(keys))


def _config_files(fields: _Fields, manifest_path: Path) -> tuple[tuple[str, str], ...]:
    keys = ("install", "config_files")
    files = fields.get(*keys, kind=dict, required=False, default={})
    result = []
    for name in sorted(files):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)) or name.lower() == "autounattend.xml":
            raise fields.error((*keys, name), "expected a plain file name (letters, digits, . _ -), not autounattend.xml")
        value = fields.get(*keys, name)
        result.append((name, str((manifest_path.parent / value).resolve())))
    return tuple(result)
