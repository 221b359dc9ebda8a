"""Stage 1: render a manifest (Jinja-templated YAML) in a sandbox and validate it into typed data.

The render context is deliberately small: the release date and the `--set` variables, nothing from the
environment, so the same manifest and arguments always render the same text (the build id depends on it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pipeline.errors import ManifestError

SHA256 = re.compile(r"^[0-9a-f]{64}$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SOURCE_FORMATS = ("raw", "qcow2")
PREVIOUS_POLICIES = ("demote", "hide")
VISIBILITIES = ("public", "community", "shared", "private")
DEFAULT_FAMILY_KEYS = ("os_distro", "os_distro_major", "os_edition", "architecture")
MAX_INCLUDE_DEPTH = 4


@dataclass(frozen=True)
class Source:
    location: str  # an absolute path, or a URL
    sha256: str
    format: str | None  # None: detected with qemu-img
    field: str = "source"  # where the manifest pins it (for error messages)

    @property
    def is_url(self) -> bool:
        return "://" in self.location


@dataclass(frozen=True)
class BakeSpec:
    """The offline virtio refresh: which virtio-win, which drivers, which extra elements."""

    virtio_win: Source
    drivers: tuple[str, ...]
    elements: tuple[str, ...]  # in addition to the default chain
    elements_path: tuple[str, ...]  # site element directories, searched before the project's
    qcow2: bool  # also write a qcow2 of the result
    epoch: str | None = None  # ISO date stamped on everything the bake writes (default: virtio-win's release date)


@dataclass(frozen=True)
class SecretRef:
    """Where a secret is read from at build time; the manifest holds only this reference."""

    file: str | None = None  # absolute path
    env: str | None = None  # environment variable name
    field: str = ""

    def describe(self) -> str:
        return f"file {self.file}" if self.file else f"environment variable {self.env}"


@dataclass(frozen=True)
class InstallSpec:
    """An unattended Windows Setup run under QEMU: the media, the answer file's choices, the machine."""

    media: Source  # the installation ISO
    virtio_win: Source  # the drivers Setup loads in windowsPE (storage, network)
    windows: str  # virtio-win OS directory of what gets installed: w7, 2k8R2, w10, w11, 2k16, 2k19, 2k22, 2k25
    image_index: int | None  # /IMAGE/INDEX in install.wim, or
    image_name: str | None  # /IMAGE/NAME
    edition: str  # the edition id the KMS client key is chosen by (Enterprise, ServerStandard, ...)
    product_key: str | SecretRef | None  # "kms" (public KMS client key), None (no key), or a secret file
    administrator_password: SecretRef
    language: str
    timezone: str
    firmware: str  # bios | uefi
    secure_boot: bool
    tpm: bool
    machine: str  # q35 | pc
    disk_bus: str  # virtio-blk | virtio-scsi
    disk_size_gib: int
    memory_mib: int
    cpus: int
    timeout_minutes: float  # with KVM; multiplied by tcg_timeout_factor under TCG
    tcg_timeout_factor: float
    boot_keypress: bool  # press a key while the first boot shows "Press any key to boot from CD" (UEFI ISOs)
    config_files: tuple[tuple[str, str], ...] = ()  # (name on the config media, absolute path)
    ovmf_code: str | None = None  # firmware overrides (default: Debian's OVMF 4M, Secure Boot build when asked)
    ovmf_vars: str | None = None

    def to_dict(self) -> dict:
        """The settings that shape the installed disk (no secret values, only where they come from)."""
        data = {k: v for k, v in self.__dict__.items() if k not in ("media", "virtio_win", "product_key", "administrator_password")}
        data["media_sha256"] = self.media.sha256
        data["virtio_win_sha256"] = self.virtio_win.sha256
        data["product_key"] = self.product_key if isinstance(self.product_key, str) or self.product_key is None else "file"
        data["config_files"] = [list(pair) for pair in self.config_files]
        return data


@dataclass(frozen=True)
class ReleasePolicy:
    family_keys: tuple[str, ...]
    previous: str  # what happens to the releases this one supersedes


@dataclass(frozen=True)
class Manifest:
    path: Path
    name: str
    release_date: str
    family: dict[str, str]
    os: dict[str, str]
    source: Source | None  # the disk image the chain starts from (None: it is installed from media)
    properties: dict[str, Any]
    visibility: str
    min_ram: int
    min_disk: int | None
    tags: tuple[str, ...]
    release: ReleasePolicy
    upstream_provider: str
    lint_suppress: dict[str, str] = field(default_factory=dict)  # rule id -> why it does not apply
    bake: BakeSpec | None = None
    install: InstallSpec | None = None
    variables: dict[str, str] = field(default_factory=dict)
    rendered: str = ""  # canonical JSON of the validated document: what the build id hashes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.rendered.encode()).hexdigest()

    @property
    def family_filter(self) -> dict[str, str]:
        return {key: self.family[key] for key in self.release.family_keys}


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


def parse_release_date(value: str | None) -> str:
    if value is None:
        return today()
    if not ISO_DATE.match(value):
        raise ManifestError("--release-date", None, f"expected an ISO date YYYY-MM-DD, got {value!r}")
    try:
        dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ManifestError("--release-date", None, f"{value!r} is not a valid date ({exc})") from None
    return value


def parse_variables(pairs: list[str] | None) -> dict[str, str]:
    """`--set key=value` pairs into the render context."""
    variables: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not VARIABLE.match(key):
            raise ManifestError("--set", None, f"expected key=value with an identifier as key, got {pair!r}")
        if key == "release_date":
            raise ManifestError("--set", None, "release_date is set with --release-date")
        variables[key] = value
    return variables


def load_manifest(path: str | Path, *, release_date: str | None = None, variables: dict[str, str] | None = None) -> Manifest:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(str(path), None, "no such manifest file")
    context = {"release_date": parse_release_date(release_date), **(variables or {})}
    document, positions = _load_with_includes(path, context, depth=0)
    return _validate(path, document, positions, context)


def manifest_from_document(path: Path, document: dict, *, release_date: str, variables: dict[str, str]) -> Manifest:
    """A manifest from its already rendered document (as a lock file records it)."""
    return _validate(path, json.loads(json.dumps(document)), {}, {"release_date": release_date, **variables})


# -- rendering ------------------------------------------------------------------------------------------


def _environment(directory: Path) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_text(path: Path, context: dict[str, str]) -> str:
    env = _environment(path.parent)
    try:
        return env.get_template(path.name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise ManifestError(str(path), None, f"template syntax error: {exc.message}", line=exc.lineno) from None
    except jinja2.UndefinedError as exc:
        line = _template_line(exc, path)
        raise ManifestError(
            str(path), None, f"{exc.message}; known variables: {', '.join(sorted(context))} (add --set NAME=VALUE)", line=line
        ) from None
    except jinja2.TemplateError as exc:
        raise ManifestError(str(path), None, f"template error: {exc}", line=_template_line(exc, path)) from None
    except Exception as exc:  # a sandbox SecurityError and friends: still one line, never a traceback
        raise ManifestError(str(path), None, f"template error: {exc}", line=_template_line(exc, path)) from None


def _template_line(exc: BaseException, path: Path) -> int | None:
    """Jinja rewrites tracebacks so that template frames carry the template's file name and line."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == str(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _parse_yaml(path: Path, text: str) -> tuple[Any, dict[tuple, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(str(path), None, f"invalid YAML: {problem}", line=mark.line + 1 if mark else None) from None
    positions: dict[tuple, int] = {}
    if node is not None:
        _record_positions(node, (), positions)
    return document, positions


def _record_positions(node: yaml.Node, prefix: tuple, out: dict[tuple, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = prefix + (key_node.value,)
            out[key] = key_node.start_mark.line + 1
            _record_positions(value_node, key, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out[prefix + (index,)] = item.start_mark.line + 1
            _record_positions(item, prefix + (index,), out)


def _load_with_includes(path: Path, context: dict[str, str], depth: int) -> tuple[dict, dict[tuple, tuple[Path, int]]]:
    """Render and parse a manifest; `include:` names files (relative to it) whose data it overrides."""
    document, lines = _parse_yaml(path, render_text(path, context))
    if not isinstance(document, dict):
        raise ManifestError(str(path), None, "expected a YAML mapping at the top level")
    positions = {key: (path, line) for key, line in lines.items()}
    includes = document.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ManifestError(str(path), "include", "expected a file name or a list of file names", line=lines.get(("include",)))
    merged: dict = {}
    merged_positions: dict[tuple, tuple[Path, int]] = {}
    for name in includes:
        included = (path.parent / name).resolve()
        if depth >= MAX_INCLUDE_DEPTH:
            raise ManifestError(str(path), "include", f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
        if not included.is_file():
            raise ManifestError(str(path), "include", f"included file {name!r} not found", line=lines.get(("include",)))
        data, data_positions = _load_with_includes(included, context, depth + 1)
        merged = _deep_merge(merged, data)
        merged_positions.update(data_positions)
    merged_positions.update(positions)
    return _deep_merge(merged, document), merged_positions


def _deep_merge(base: dict, override: dict) -> dict:
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _deep_merge(result[key], value)
        else:
            result[key] = value
    return result


# -- validation -----------------------------------------------------------------------------------------


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
                   "install"}


def _validate(path: Path, document: dict, positions: dict, context: dict[str, str]) -> Manifest:
    fields = _Fields(path, document, positions)
    for key in document:
        if key not in KNOWN_TOP_LEVEL:
            raise fields.error((key,), f"unknown field; expected one of {', '.join(sorted(KNOWN_TOP_LEVEL))}")

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
    release_keys = fields.get("release", "family_properties", kind=list, required=False, default=list(family))
    for index, key in enumerate(release_keys):
        if not isinstance(key, str) or key not in family:
            raise fields.error(("release", "family_properties", index), f"expected a key of family ({', '.join(family)}), got {key!r}")

    min_disk = fields.get("image", "min_disk", kind=int, required=False)
    min_ram = fields.get("image", "min_ram", kind=int, required=False, default=0)
    for keys, value in ((("image", "min_disk"), min_disk), (("image", "min_ram"), min_ram)):
        if value is not None and value < 0:
            raise fields.error(keys, f"expected a non-negative integer, got {value}")
    tags = fields.get("image", "tags", kind=list, required=False, default=[])
    for index, tag in enumerate(tags):
        if not isinstance(tag, str) or not tag:
            raise fields.error(("image", "tags", index), f"expected a non-empty string, got {tag!r}")

    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return Manifest(
        path=path,
        name=fields.get("name"),
        release_date=context["release_date"],
        family=dict(family),
        os=os_info,
        source=_source(fields, path) if "source" in document else None,
        properties=dict(properties),
        visibility=fields.choice("image", "visibility", choices=VISIBILITIES, default="public"),
        min_ram=min_ram,
        min_disk=min_disk,
        tags=tuple(tags),
        release=ReleasePolicy(
            family_keys=tuple(release_keys),
            previous=fields.choice("release", "previous", choices=PREVIOUS_POLICIES, default="demote"),
        ),
        upstream_provider=fields.get("upstream_provider", required=False, default=""),
        lint_suppress=_suppressions(fields),
        bake=_bake(fields, path),
        install=_install(fields, path) if "install" in document else None,
        variables={k: v for k, v in context.items() if k != "release_date"},
        rendered=canonical,
    )


def _suppressions(fields: _Fields) -> dict[str, str]:
    from pipeline.lint import RULES

    suppress = fields.get("lint", "suppress", kind=dict, required=False, default={})
    for rule_id in suppress:
        if rule_id not in RULES:
            raise fields.error(("lint", "suppress", rule_id), f"unknown rule; expected one of {', '.join(RULES)}")
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
    if not SHA256.match(sha256.lower()):
        raise fields.error((*section, "sha256"), f"expected 64 hex digits, got {sha256!r}")
    source_format = fields.get(*section, "format", required=False) if formats else None
    if source_format is not None and source_format not in SOURCE_FORMATS:
        raise fields.error((*section, "format"), f"expected one of {', '.join(SOURCE_FORMATS)}, got {source_format!r}")
    if location_url:
        if not re.match(r"^(https?|file)://", location_url):
            raise fields.error((*section, "url"), f"expected an http(s):// or file:// URL, got {location_url!r}")
        location = location_url
    else:
        location = str((manifest_path.parent / location_path).resolve())
    return Source(location=location, sha256=sha256.lower(), format=source_format, field=".".join(section))


def _bake(fields: _Fields, manifest_path: Path) -> BakeSpec | None:
    from pipeline.windows.drivers import DEFAULT_SELECTION, DRIVERS

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
    if epoch is not None and not ISO_DATE.match(epoch):
        raise fields.error(("bake", "epoch"), f"expected an ISO date YYYY-MM-DD (quoted), got {epoch!r}")
    return BakeSpec(
        virtio_win=_source(fields, manifest_path, ("bake", "virtio_win"), formats=False),
        drivers=tuple(drivers),
        elements=tuple(elements),
        elements_path=tuple(str((manifest_path.parent / p).resolve()) for p in paths),
        qcow2=qcow2,
        epoch=epoch,
    )


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
    if index is not None and index < 1:
        raise fields.error((*section, "image", "index"), f"expected an index from 1, got {index}")
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
    if not LANGUAGE.match(language):
        raise fields.error((*section, "language"), f"expected a language tag such as en-US, got {language!r}")
    numbers = {}
    for key, default, low in (("disk_size_gib", 40, 1), ("memory_mib", 4096, 256), ("cpus", 2, 1)):
        numbers[key] = fields.get(*section, key, kind=int, required=False, default=default)
        if numbers[key] < low:
            raise fields.error((*section, key), f"expected an integer of at least {low}, got {numbers[key]}")
    timing = {}
    for key, default in (("timeout_minutes", 240), ("tcg_timeout_factor", 20)):
        timing[key] = fields.get(*section, key, kind=(int, float), required=False, default=default)
        if isinstance(timing[key], bool) or timing[key] <= 0:
            raise fields.error((*section, key), f"expected a positive number, got {timing[key]!r}")
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
    if env and not VARIABLE.match(env):
        raise fields.error((*keys, "env"), f"expected an environment variable name, got {env!r}")
    return SecretRef(file=str((manifest_path.parent / file).resolve()) if file else None, env=env, field=".".join(keys))


def _config_files(fields: _Fields, manifest_path: Path) -> tuple[tuple[str, str], ...]:
    keys = ("install", "config_files")
    files = fields.get(*keys, kind=dict, required=False, default={})
    result = []
    for name in sorted(files):
        if not re.match(r"^[A-Za-z0-9_.-]+$", str(name)) or name.lower() == "autounattend.xml":
            raise fields.error((*keys, name), "expected a plain file name (letters, digits, . _ -), not autounattend.xml")
        value = fields.get(*keys, name)
        result.append((name, str((manifest_path.parent / value).resolve())))
    return tuple(result)
