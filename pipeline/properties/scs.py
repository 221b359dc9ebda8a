"""Conformance of published images to SCS-0102 (Sovereign Cloud Stack image metadata), judged as the standard's
own checker judges it: Tests/iaas/scs_0102_image_metadata/image_metadata.py in SovereignCloudStack/standards,
run by Tests/iaas/openstack_test.py. Each rule below names the checker's test case it mirrors; an error here
is a failing test case there, a warning is what the checker only logs. What the bakery adds of its own is
marked "bakery" and is never an error.

Scope (openstack_test.py, `images`): the images whose visibility is public or community. Images the checker
does not list (private, shared) and images no user can boot from the catalog (hidden, deactivated) are not
judged, as the checker's run on a real cloud does not see them as offers.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

GIB = 1024**3
# The checker's vocabularies (image_metadata.py): None means the property may be absent.
ARCHITECTURES = ("x86_64", "aarch64", "risc-v")
HW_DISK_BUSES = ("virtio", "scsi", None)
HYPERVISOR_TYPES = ("qemu", "kvm", "xen", "hyper-v", "esxi", None)
HW_RNG_MODELS = ("virtio", None)
OS_PURPOSES = ("generic", "oldgeneric", "minimal", "k8snode", "gpu", "network", "custom")
# FREQ_TO_SEC, in days (the checker rounds a little up on purpose: weekly is 7 x 25 h, daily 25 h)
REPLACE_WITHIN = {"never": None, "critical_bug": None, "yearly": dt.timedelta(days=365), "quarterly": dt.timedelta(days=92),
                  "monthly": dt.timedelta(days=31), "weekly": dt.timedelta(hours=7 * 25), "daily": dt.timedelta(hours=25)}
SLACK = 1.1
OUTDATED_MARKERS = ("old", "prev")
STRICT_FORMS = ("%Y-%m-%dT%H:%M:%SZ",)
DATE_FORMS = STRICT_FORMS + ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")
MARKER_FORMS = ("%Y-%m-%d", "%Y%m%d")  # a date appended to an outdated image's name
# The properties the per-image test cases judge (the test case is scs-0102-prop-<property>).
PROPERTY_CHECKS = ("architecture", "os_version", "os_distro", "os_purpose", "hw_disk_bus", "hypervisor_type", "hw_rng_model",
                   "image_source", "image_original_user", "image_description", "replace_frequency", "provided_until",
                   "uuid_validity", "hotfix_hours", "image_build_date", "min_ram", "min_disk", "hash_algo")
# bakery: what makes two images the same offer of one owner (a warning when two are visible under plain names)
FAMILY = ("owner", "os_distro", "os_version", "architecture", "os_distro_major", "os_edition")


@dataclass(frozen=True)
class Finding:
    image_id: str
    level: str  # error | warning
    message: str
    check: str = ""  # the checker's test case, or "bakery"

    def to_dict(self) -> dict:
        return {"image": self.image_id, "level": self.level, "message": self.message, "check": self.check}


def in_scope(image: dict) -> bool:
    """What the checker judges: public and community images, as offered (not hidden, not deactivated)."""
    return image.get("visibility") in ("public", "community") and not image.get("os_hidden") and image.get("status", "active") == "active"


def parse_date(value: str | None, forms: tuple[str, ...] = DATE_FORMS) -> dt.datetime | None:
    """The date forms the checker accepts (UTC): Glance's ISO 8601, YYYY-MM-DD hh:mm[:ss], YYYY-MM-DD."""
    for form in forms if isinstance(value, str) and value else ():
        try:
            return dt.datetime.strptime(value, form).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            continue
    return None


def check_properties(image: dict, now: dt.datetime) -> list[Finding]:
    """The per-image test cases that need nothing but the image's own fields (what lint can run before publishing,
    with the values the image will have)."""
    found: list[Finding] = []

    def add(check: str, message: str, level: str = "error") -> None:
        found.append(Finding(image.get("id", ""), level, message, f"scs-0102-{check}"))

    props = image
    if props.get("architecture") not in ARCHITECTURES:
        add("prop-architecture", f"architecture {props.get('architecture')!r} is not one of {', '.join(ARCHITECTURES)}")
    for key, check in (("os_version", "prop-os_version"), ("os_distro", "prop-os_distro"), ("image_original_user", "prop-image_original_user"),
                       ("image_description", "prop-image_description"), ("provided_until", "prop-provided_until")):
        if not props.get(key):
            add(check, f"mandatory property {key} is missing")
    if props.get("os_purpose") not in OS_PURPOSES:
        add("prop-os_purpose", f"os_purpose {props.get('os_purpose')!r} is not one of {', '.join(p for p in OS_PURPOSES)}")
    for key, allowed, check in (("hw_disk_bus", HW_DISK_BUSES, "prop-hw_disk_bus"), ("hypervisor_type", HYPERVISOR_TYPES, "prop-hypervisor_type"),
                                ("hw_rng_model", HW_RNG_MODELS, "prop-hw_rng_model")):
        if props.get(key) not in allowed:
            add(check, f"{key}={props.get(key)!r} is not one of {', '.join(a for a in allowed if a)} (or absent)")
    source = props.get("image_source") or ""
    if source != "private" and not re.match(r"^(https?|ftps?)://", source):
        add("prop-image_source", f"image_source {source!r} is neither a URL nor private")
    if props.get("replace_frequency") not in REPLACE_WITHIN:
        add("prop-replace_frequency", f"replace_frequency {props.get('replace_frequency')!r} is not one of {', '.join(REPLACE_WITHIN)}")
    validity = props.get("uuid_validity")
    if validity not in (None, "none", "notice", "forever") and not (validity[:5] == "last-" and validity[5:].isdecimal()) \
            and not parse_date(validity):
        add("prop-uuid_validity", f"uuid_validity {validity!r} is not none, notice, forever, last-N or a date")
    hotfix = props.get("hotfix_hours")
    if hotfix and not str(hotfix).isdecimal():
        add("prop-hotfix_hours", f"hotfix_hours {hotfix!r} is not a whole number of hours")
    built = parse_date(props.get("image_build_date"))
    if not built:
        add("prop-image_build_date", f"image_build_date {props.get('image_build_date')!r} is not a date")
    elif built > now:
        add("prop-image_build_date", f"image_build_date {props['image_build_date']} is in the future")
    if not props.get("min_ram"):
        add("prop-min_ram", "min_ram is not set")
    elif int(props["min_ram"]) < 64:
        add("prop-min_ram", f"min_ram {props['min_ram']} MiB is below 64 MiB", "warning")
    return found


def check_image(image: dict, now: dt.datetime) -> list[Finding]:
    """Every per-image test case, those that need Glance's own fields (size, hash, registration) included."""
    found = check_properties(image, now)

    def add(check: str, message: str, level: str = "error") -> None:
        found.append(Finding(image["id"], level, message, f"scs-0102-{check}"))

    if image.get("os_hash_algo") not in ("sha256", "sha512"):
        add("prop-hash_algo", f"os_hash_algo {image.get('os_hash_algo')!r} is not sha256 or sha512")
    if not image.get("min_disk"):
        add("prop-min_disk", "min_disk is not set")
    elif image.get("size") and int(image["min_disk"]) * GIB < int(image["size"]):
        add("prop-min_disk", f"min_disk {image['min_disk']} GiB is smaller than the image ({image['size']} bytes)")
    registered = parse_date(image.get("created_at"), STRICT_FORMS)
    built = parse_date(image.get("image_build_date"))
    if built and registered and built > registered:
        add("prop-image_build_date", f"image_build_date {image['image_build_date']} is after the image was registered ({image['created_at']})")
    expected = f"{image.get('os_distro', '')} {image.get('os_version', '')}"
    if not (image.get("name") or "").casefold().startswith(expected.casefold()):
        found.append(Finding(image["id"], "warning", f"the name does not start with {expected!r} (os_distro os_version), as the "
                             "standard recommends", "bakery"))
    return found


def outdated(image: dict, now: dt.datetime) -> int:
    """is_outdated of the checker: 0 not outdated (or no promise left), 1 outdated but hidden or renamed with a
    date or old/prev, 2 outdated and still offered under its plain name, 3 outdated with no valid provided_until."""
    built = parse_date(image.get("image_build_date")) or parse_date(image.get("created_at"), STRICT_FORMS)
    within = REPLACE_WITHIN.get(image.get("replace_frequency") or "never")
    if within is None or built is None or now <= built + within * SLACK:
        return 0
    until = image.get("provided_until") or ""
    if until in ("none", "notice"):
        return 0
    until_date = parse_date(until)
    if until_date is None:
        return 3
    if now > until_date:
        return 0
    if image.get("os_hidden"):
        return 1
    return 1 if _marked_outdated(image.get("name") or "") else 2


def _marked_outdated(name: str) -> bool:
    marker = name.rsplit(" ", 1)[-1] if " " in name else ""
    return marker in OUTDATED_MARKERS or parse_date(marker, MARKER_FORMS) is not None


def check_recency(images: list[dict], now: dt.datetime) -> list[Finding]:
    """scs-0102-image-recency: an outdated image needs a replacement: the image named as it is without its last
    word, itself not outdated (the checker's _find_replacement_image, by exact name)."""
    by_name = {image.get("name") or "": image for image in images}
    findings = []
    duplicates = [name for name, count in Counter(i.get("name") or "" for i in images).items() if count > 1]
    for name in duplicates:
        findings += [Finding(i["id"], "warning", f"the name {name!r} is used by several images: the checker keeps one",
                             "scs-0102-image-recency") for i in images if (i.get("name") or "") == name]
    for image in images:
        state = outdated(image, now)
        if not state:
            continue
        if state == 3:
            findings.append(Finding(image["id"], "error", f"outdated, and provided_until {image.get('provided_until')!r} is not a "
                                    "valid date", "scs-0102-image-recency"))
            continue
        if state == 2:
            findings.append(Finding(image["id"], "warning", "outdated (by its replace_frequency) but neither hidden nor renamed",
                                    "scs-0102-image-recency"))
        name = image.get("name") or ""
        short = name.rsplit(" ", 1)[0].rstrip()
        replacement = by_name.get(short) if short != name else None
        if replacement is None or outdated(replacement, now):
            findings.append(Finding(image["id"], "error", f"outdated without replacement: no current image named {short!r}"
                                    if short != name else "outdated without replacement: its name has no last word to drop",
                                    "scs-0102-image-recency"))
    return findings


def check_uniqueness(images: list[dict]) -> list[Finding]:
    """scs-0102-os-purpose-uniqueness: at most one public, visible image with os_purpose=generic per
    architecture, os_distro and os_version."""
    buckets = defaultdict(list)
    for image in images:
        if image.get("visibility") != "public" or image.get("os_hidden") or not image.get("os_distro") or not image.get("os_version"):
            continue
        if image.get("os_purpose") == "generic":
            buckets[(image.get("architecture") or "", image["os_distro"], image["os_version"])].append(image)
    findings = []
    for key, bucket in buckets.items():
        if len(bucket) > 1:
            ids = ", ".join(i["id"] for i in bucket)
            findings += [Finding(i["id"], "error", f"{len(bucket)} public generic images of {'/'.join(key)} ({ids}): one may be "
                                 "os_purpose=generic, the others hidden or of another purpose", "scs-0102-os-purpose-uniqueness")
                         for i in bucket]
    return findings


def check_catalog(images: list[dict], now: dt.datetime) -> list[Finding]:
    """Every test case over the images the checker judges (in_scope), and the bakery's family warning."""
    judged = [image for image in images if in_scope(image)]
    findings = [finding for image in judged for finding in check_image(image, now)]
    findings += check_recency(judged, now) + check_uniqueness(judged)
    visible = defaultdict(list)
    for image in judged:
        visible[tuple(image.get(key) for key in FAMILY)].append(image)
    for key, group in visible.items():
        plain = [i for i in group if not _marked_outdated(i.get("name") or "")]
        if len(plain) > 1:
            what = " ".join(str(value) for value in key[1:] if value)
            findings += [Finding(i["id"], "warning", f"{len(plain)} visible images of {what} without a date in their name: the "
                                 "checker finds replacements by name; hide or rename the older ones", "bakery") for i in plain]
    return findings


def renamed_for_hiding(name: str, build_date: str) -> str:
    """SCS-0102: an outdated image keeps its UUID but gets its build date appended (" YYYYMMDD")."""
    stamp = build_date[:10].replace("-", "")
    return name if _marked_outdated(name) else f"{name} {stamp}"


def marked_outdated(name: str) -> bool:
    """A name whose last word says it is superseded (a date, old, prev): the checker does not take it for current."""
    return _marked_outdated(name)
