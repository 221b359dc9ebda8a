"""Conformance of published images to SCS-0102 (Sovereign Cloud Stack image metadata), judged the way the
standard's own checker judges it: mandatory properties and their vocabularies, dates that parse and do not
lie, an outdated image that is neither hidden nor renamed, and at most one visible image per
distro, version and architecture.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from dataclasses import dataclass

GIB = 1024**3
# (property, allowed values or () for any non-empty value)
MANDATORY = (
    ("os_distro", ()), ("os_version", ()), ("architecture", ("x86_64", "aarch64", "risc-v")),
    ("hypervisor_type", ("qemu", "kvm", "xen", "hyper-v", "esxi")), ("hw_disk_bus", ("virtio", "scsi")),
    ("image_build_date", ()), ("image_original_user", ()), ("image_source", ()), ("image_description", ()),
    ("replace_frequency", ("yearly", "quarterly", "monthly", "weekly", "daily", "critical_bug", "never")),
    ("provided_until", ()), ("uuid_validity", ()),
)
OPTIONAL = (("hw_rng_model", ("virtio",)), ("os_purpose", ("generic", "minimal", "k8snode", "gpu", "network", "custom")))
# How long an image may go without a replacement, with the standard's 10 % of slack on top.
REPLACE_WITHIN_DAYS = {"yearly": 365, "quarterly": 92, "monthly": 31, "weekly": 7, "daily": 1}
SLACK = 1.1
OUTDATED_MARKERS = ("old", "prev")
DATE_FORMS = ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")
MARKER_FORMS = ("%Y-%m-%d", "%Y%m%d")  # a date appended to an outdated image's name
# What makes two images the same offer: a different edition (os_distro_major, os_edition) is another product.
FAMILY = ("owner", "os_distro", "os_version", "architecture", "os_distro_major", "os_edition")


@dataclass(frozen=True)
class Finding:
    image_id: str
    level: str  # error | warning
    message: str

    def to_dict(self) -> dict:
        return {"image": self.image_id, "level": self.level, "message": self.message}


def parse_date(value: str | None, forms: tuple[str, ...] = DATE_FORMS) -> dt.datetime | None:
    """The date forms the standard accepts (UTC): YYYY-MM-DD, YYYY-MM-DD hh:mm[:ss], and Glance's own ISO 8601."""
    for form in forms if value else ():
        try:
            return dt.datetime.strptime(value, form).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            continue
    return None


def check_image(image: dict, now: dt.datetime) -> list[Finding]:
    found: list[Finding] = []

    def add(level: str, message: str) -> None:
        found.append(Finding(image["id"], level, message))

    for key, allowed in MANDATORY + OPTIONAL:
        value = image.get(key)
        if value in (None, ""):
            if (key, allowed) in MANDATORY:
                add("error", f"mandatory property {key} is missing")
        elif allowed and value not in allowed:
            add("error", f"{key}={value!r} is not one of {', '.join(allowed)}")
    _check_dates(image, now, add)
    _check_origin(image, add)
    if image.get("os_hash_algo") not in ("sha256", "sha512"):
        add("warning", f"os_hash_algo {image.get('os_hash_algo')!r}: sha256 or sha512 is recommended")
    if int(image.get("min_ram") or 0) < 64:
        add("warning", f"min_ram {image.get('min_ram') or 0} MiB is below 64 MiB")
    if image.get("size") and int(image.get("min_disk") or 0) * GIB < int(image["size"]):
        add("warning", f"min_disk {image.get('min_disk') or 0} GiB is smaller than the image ({image['size']} bytes)")
    expected = f"{image.get('os_distro', '')} {image.get('os_version', '')}"
    if not (image.get("name") or "").casefold().startswith(expected.casefold()):
        add("warning", f"the name does not start with {expected!r} (os_distro os_version), as the standard recommends")
    return found


def _check_dates(image: dict, now: dt.datetime, add) -> None:
    registered = parse_date(image.get("created_at")) or now
    built = parse_date(image.get("image_build_date"))
    if image.get("image_build_date") and built is None:
        add("error", f"image_build_date {image['image_build_date']!r} is not YYYY-MM-DD [hh:mm[:ss]]")
    elif built and built > registered:
        add("error", f"image_build_date {image['image_build_date']} is after the image was registered ({image.get('created_at')})")
    if built and built > now:
        add("error", f"image_build_date {image['image_build_date']} is in the future")
    validity = image.get("uuid_validity")
    if validity and not (validity in ("none", "notice", "forever") or re.fullmatch(r"last-\d+", validity) or parse_date(validity)):
        add("error", f"uuid_validity {validity!r} is not none, notice, forever, last-N or a date")
    hotfix = image.get("hotfix_hours")
    if hotfix is not None and not str(hotfix).isdecimal():
        add("error", f"hotfix_hours {hotfix!r} is not a whole number of hours")
    outdated = _outdated(image, built or registered, now)
    if outdated:
        add(*outdated)


def _outdated(image: dict, built: dt.datetime, now: dt.datetime) -> tuple[str, str] | None:
    """An image past its replace_frequency that is still offered under its plain name."""
    days = REPLACE_WITHIN_DAYS.get(image.get("replace_frequency") or "")
    if not days or now <= built + dt.timedelta(days=days * SLACK):
        return None
    until = image.get("provided_until") or ""
    if until in ("none", "notice"):
        return None
    until_date = parse_date(until)
    if until_date is None:
        return ("error", f"provided_until {until!r} is not none, notice or a date")
    if now > until_date or image.get("os_hidden") or _marked_outdated(image.get("name") or ""):
        return None
    return ("warning", f"outdated (built {built.date()}, replaced {image['replace_frequency']}) but neither hidden nor renamed")


def _marked_outdated(name: str) -> bool:
    marker = name.rsplit(" ", 1)[-1] if " " in name else ""
    return marker in OUTDATED_MARKERS or parse_date(marker, MARKER_FORMS) is not None


def _check_origin(image: dict, add) -> None:
    source = image.get("image_source")
    if source and source != "private" and not re.match(r"^(https?|ftps?)://", source):
        add("error", f"image_source {source!r} is neither a URL nor private")


def check_catalog(images: list[dict], now: dt.datetime) -> list[Finding]:
    """Every image's findings, and the rule that a family (one owner's distro, version, architecture and
    edition) offers one visible image under its plain name: the older ones hidden or renamed."""
    findings = [finding for image in images for finding in check_image(image, now)]
    visible = defaultdict(list)
    for image in images:
        if not image.get("os_hidden") and image.get("status") == "active":
            visible[tuple(image.get(key) for key in FAMILY)].append(image)
    for key, group in visible.items():
        plain = [i for i in group if not _marked_outdated(i.get("name") or "")]
        if len(plain) > 1:
            ids = ", ".join(i["id"] for i in plain)
            what = " ".join(str(value) for value in key[1:] if value)
            findings += [Finding(i["id"], "error", f"{len(plain)} visible images of {what} without a date in their name "
                                 f"({ids}): hide or rename the older ones") for i in plain]
    return findings


def renamed_for_hiding(name: str, build_date: str) -> str:
    """SCS-0102: an outdated image keeps its UUID but gets its build date appended (" YYYYMMDD")."""
    stamp = build_date[:10].replace("-", "")
    return name if _marked_outdated(name) else f"{name} {stamp}"
