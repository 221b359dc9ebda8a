"""What changed between two releases' SBOMs: components added, removed and changed (old -> new version).

Components are compared by what a reader means by "the same thing": Windows by its product, an update by its
KB (or rollup package name), a driver by its INF name (the driver store may hold several packages of one INF:
their versions are compared as a set), a program by its name and bitness, a build input by its pin name
(compared by sha256).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

KINDS = ("windows", "update", "driver", "program", "input")


@dataclass(frozen=True)
class Change:
    kind: str  # windows | update | driver | program | input
    name: str
    old: str | None  # None: added
    new: str | None  # None: removed

    @property
    def action(self) -> str:
        return "added" if self.old is None else "removed" if self.new is None else "changed"

    def to_dict(self) -> dict:
        return {**asdict(self), "action": self.action}


def inventory(document: dict) -> dict[tuple[str, str], str]:
    """(kind, name) -> version (or sha256 for inputs) of a CycloneDX document the bakery wrote."""
    found: dict[tuple[str, str], set[str]] = {}

    def add(kind: str, name: str, version: str | None) -> None:
        found.setdefault((kind, name), set()).add(version or "?")

    for component in document.get("components", []):
        kind = component.get("type")
        name = str(component.get("name", "?"))
        if kind == "operating-system":
            add("windows", name, component.get("version"))
            for update in component.get("components", []):
                add("update", str(update.get("name", "?")), update.get("version"))
        elif kind == "device-driver":
            staged = _property(component, "state") == "staged"
            add("driver", f"{name} (staged)" if staged else name, component.get("version"))
        elif kind == "application":
            bitness, state = _property(component, "bitness"), _property(component, "state")
            label = f"{name} (32-bit)" if bitness == "32-bit" else f"{name} (staged)" if state == "staged" else name
            add("program", label, component.get("version") or _sha256(component))
        elif kind == "file":
            add("input", name, _sha256(component))
    return {key: ", ".join(sorted(versions, key=_version_key)) for key, versions in found.items()}


def _property(component: dict, name: str) -> str:
    return next((str(p.get("value")) for p in component.get("properties", []) if p.get("name") == f"bakery:{name}"), "")


def _sha256(component: dict) -> str | None:
    digest = next((h.get("content") for h in component.get("hashes", []) if h.get("alg") == "SHA-256"), None)
    return f"sha256:{digest[:16]}" if digest else None


def compare(old: dict | None, new: dict) -> list[Change]:
    """Changes from `old` to `new` (every component is "added" when there is no old SBOM), in KINDS order."""
    before = inventory(old) if old else {}
    after = inventory(new)
    changes = []
    for key in sorted(set(before) | set(after), key=lambda k: (KINDS.index(k[0]), k[1].lower())):
        if before.get(key) != after.get(key):
            changes.append(Change(key[0], key[1], before.get(key), after.get(key)))
    return changes


def _version_key(version: str) -> tuple:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in version.replace("-", ".").split("."))
