"""Rules that a property set must pass before anything is published.

Each rule has an id, a severity and the source it rests on, so a finding can say why it matters.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from pipeline import metadefs


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str  # "error" stops the publish; "warning" is reported
    summary: str
    source: str
    check: Callable[[dict], Iterator[tuple[str | None, str]]]


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    property: str | None
    message: str
    source: str

    def one_line(self) -> str:
        where = f"{self.property}: " if self.property else ""
        return f"[{self.rule}] {where}{self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


RULES: list[Rule] = []


def rule(id: str, severity: str, summary: str, source: str):
    def register(check):
        RULES.append(Rule(id, severity, summary, source, check))
        return check

    return register


def lint(properties: dict) -> list[Finding]:
    return [
        Finding(r.id, r.severity, prop, message, r.source)
        for r in RULES
        for prop, message in r.check(properties)
    ]


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


# -- rules ----------------------------------------------------------------------------------------------


@rule(
    "os-type-windows",
    "error",
    "A Windows image must carry os_type exactly 'windows'.",
    "nova/virt/libvirt/driver.py (_set_features, _set_clock): Hyper-V enlightenments and the localtime "
    "clock are added only when the instance's os_type == 'windows'; os_distro plays no part.",
)
def _os_type_windows(props: dict):
    distro = props.get("os_distro")
    looks_windows = isinstance(distro, str) and distro.strip().lower().startswith("win")
    if not looks_windows:
        return
    os_type = props.get("os_type")
    if os_type is None:
        yield "os_type", f"missing while os_distro is {distro!r}: Nova adds no Hyper-V enlightenments (Windows guests can blue-screen with CLOCK_WATCHDOG_TIMEOUT); set os_type: windows"
    elif os_type != "windows":
        yield "os_type", f"is {os_type!r}; Nova compares the raw string to 'windows', so this gets no Hyper-V enlightenments; set exactly 'windows'"


@rule(
    "value-not-string",
    "error",
    "Every property value is a string.",
    "glance/api/v2/images.py schema: additionalProperties are {'type': 'string'}; glanceclient rejects other types.",
)
def _values_are_strings(props: dict):
    for key, value in props.items():
        if not isinstance(value, str):
            yield key, f"value {value!r} is a {type(value).__name__}; quote it in YAML so it is the string {str(value).lower() if isinstance(value, bool) else str(value)!r}"


@rule(
    "enum-metadefs",
    "error",
    "Enumerated properties use a value Glance's metadefs allow.",
    "glance etc/metadefs/*.json (OS::Compute::LibvirtImage, OS::Compute::TPM, ...); Nova fails the boot on a bad enum value.",
)
def _enum_values(props: dict):
    definitions = metadefs.image_properties()
    for key, value in props.items():
        definition = definitions.get(key)
        if definition and definition.enum and isinstance(value, str) and value not in definition.enum:
            yield key, f"{value!r} is not one of {', '.join(definition.enum)} ({definition.namespace})"


@rule(
    "release-date-iso",
    "error",
    "release_date is an ISO date (YYYY-MM-DD).",
    "this project's convention: release_date orders releases of a family and is compared as text.",
)
def _release_date(props: dict):
    value = props.get("release_date")
    if value is None:
        yield "release_date", "missing"
        return
    try:
        if not (isinstance(value, str) and len(value) == 10 and dt.date.fromisoformat(value)):
            raise ValueError
    except ValueError:
        yield "release_date", f"{value!r} is not an ISO date YYYY-MM-DD"
