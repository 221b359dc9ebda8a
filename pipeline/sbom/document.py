"""A built image's bill of materials as a CycloneDX 1.6 JSON document, from what the image holds
(windows.software) and what the build read (the lock's pins).

    metadata.component      the image (a file): its name, release date, build id and build stage id
    metadata.tools          the bakery (its version and source hash) and the tools that shaped the bytes
    components              Windows (operating-system, version major.minor.build.UBR), with the servicing
                            updates inside it; every driver store package (device-driver); every program
                            of the Uninstall keys (application); every pinned input (file, with its sha256)

Deterministic: the same image bytes and pins give the same bytes (timestamp = the release date, serial
number and bom-refs derived from the content), so the document is content-addressed like a stage and the
Glance image carries its sha256 (`bakery_sbom_sha256`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.errors import BakeryError
from pipeline.windows.software import Software

SBOM_FILE = "sbom.cdx.json"
SPEC_VERSION = "1.6"
PROPERTY = "bakery_sbom_sha256"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Names of properties the bakery writes on components (CycloneDX's namespaced property taxonomy).
NS = "bakery"


@dataclass(frozen=True)
class Sbom:
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def data(self) -> dict:
        return json.loads(self.text)

    def write(self, path: Path) -> Path:
        from pipeline.common.files import write_atomically

        write_atomically(path, self.text)
        return path

    def summary(self) -> dict:
        """Counts a report shows: the Windows build, and how many updates, drivers, programs and inputs."""
        components = self.data.get("components", [])
        windows = next((c for c in components if c.get("type") == "operating-system"), {})
        kinds = {"device-driver": "drivers", "application": "programs", "file": "inputs"}
        counts = {name: 0 for name in kinds.values()}
        for component in components:
            if component.get("type") in kinds:
                counts[kinds[component["type"]]] += 1
        return {"sha256": self.sha256, "windows": f"{windows.get('name', '?')} {windows.get('version', '?')}",
                "updates": len(windows.get("components", [])), **counts}


def build_sbom(software: Software, *, image_name: str, release_date: str, build_id: str, build_stage: str,
               pins: dict[str, str], tools: dict[str, str]) -> Sbom:
    """The document for one built image. `pins`: the lock's pins (a 64-hex value is a file's sha256, others
    describe tools or choices); `tools`: the tool versions that shaped the bytes."""
    from cyclonedx.model import HashAlgorithm, HashType
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6

    bom = Bom(serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"urn:bakery:sbom:{build_stage}:{_digest(pins)}"))
    bom.metadata.timestamp = dt.datetime.fromisoformat(release_date).replace(tzinfo=dt.timezone.utc)
    bom.metadata.component = Component(
        type=ComponentType.FILE, name=image_name, version=release_date, bom_ref="image",
        properties=_properties({"build_id": build_id, "build_stage": build_stage, "format": "raw"}))
    for name, version in sorted(tools.items()):
        bom.metadata.tools.components.add(Component(
            type=ComponentType.APPLICATION, name=name, version=version, bom_ref=f"tool:{name}",
            **({"group": "image-bakery"} if name.startswith("pipeline") else {})))
    windows = software.windows
    system = Component(
        type=ComponentType.OPERATING_SYSTEM, name=windows.product_name, version=software.full_build, bom_ref="windows",
        publisher="Microsoft Corporation",
        properties=_properties({"edition_id": windows.edition_id, "installation_type": windows.installation_type,
                                "display_version": windows.display_version, "architecture": windows.architecture or windows.arch,
                                "build": str(windows.build), "ubr": "" if software.ubr is None else str(software.ubr)}))
    for update in software.updates:
        system.components.add(Component(
            type=ComponentType.APPLICATION, group="windows-update", name=update.kb or update.package.split("~", 1)[0],
            version=update.version, bom_ref=f"update:{update.package}",
            properties=_properties({"cbs_package": update.package, "state": update.state})))
    bom.components.add(system)
    for driver in software.drivers:
        bom.components.add(Component(
            type=ComponentType.DEVICE_DRIVER, name=driver.inf, version=driver.version, publisher=driver.provider or None,
            bom_ref=f"driver:{driver.state}:{driver.folder}:{driver.inf}",
            properties=_properties({"state": driver.state, "folder": driver.folder, "date": driver.date or "",
                                    "class_guid": driver.class_guid or ""})))
    for installer in software.staged_installers:
        bom.components.add(Component(
            type=ComponentType.APPLICATION, name=installer.path.rsplit("\\", 1)[-1], bom_ref=f"staged:{installer.path}",
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=installer.sha256)],
            properties=_properties({"state": "staged", "path": installer.path, "size": str(installer.size)})))
    for program in software.programs:
        bom.components.add(Component(
            type=ComponentType.APPLICATION, name=program.name, version=program.version, publisher=program.publisher,
            bom_ref=f"program:{program.bitness}:{program.key}",
            properties=_properties({"installer": program.installer, "uninstall_key": program.key, "bitness": program.bitness,
                                    "system_component": str(program.system_component).lower()})))
    for name, value in sorted(pins.items()):
        if HEX64.fullmatch(value):
            bom.components.add(Component(
                type=ComponentType.FILE, group="build-input", name=name, bom_ref=f"input:{name}",
                hashes=[HashType(alg=HashAlgorithm.SHA_256, content=value)]))
    bom.register_dependency(bom.metadata.component, list(bom.components))  # the image holds every one of them
    text = JsonV1Dot6(bom).output_as_string(indent=2, sort_keys=True) + "\n"
    validate(text, label=f"{image_name}: the SBOM")
    return Sbom(text)


def validate(text: str, *, label: str) -> None:
    """The document against CycloneDX's own JSON schema (the one the spec publishes, shipped with the library)."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise BakeryError(f"{label}: not valid CycloneDX {SPEC_VERSION}: {str(error.data).splitlines()[0][:200]}")


def load_sbom(path: Path, *, expected_sha256: str | None = None) -> Sbom:
    """An SBOM file, checked: readable, valid CycloneDX, and the bytes `expected_sha256` names when given."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BakeryError(f"{path}: cannot read the SBOM ({exc.__class__.__name__})") from None
    sbom = Sbom(text)
    if expected_sha256 and sbom.sha256 != expected_sha256:
        raise BakeryError(f"{path}: its sha256 is {sbom.sha256[:16]}..., {expected_sha256[:16]}... was expected",
                          hint="the SBOM was changed after the bake; bake again")
    try:
        json.loads(text)
    except ValueError:
        raise BakeryError(f"{path}: not JSON, so not a CycloneDX SBOM") from None
    validate(text, label=str(path))
    return sbom


def _properties(values: dict[str, str]):
    from cyclonedx.model import Property

    return [Property(name=f"{NS}:{key}", value=value) for key, value in values.items() if value not in (None, "")]


def _digest(values: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
