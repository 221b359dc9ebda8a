"""Every input is untrusted: a corpus of hostile and broken disk images, manifests and templates.

Each case runs the real CLI and must end with: exit code 1, exactly one line on stderr (no traceback) that
names the input (file, field) and the reason, nothing new in Glance, the canary (written into every file
the hostile input points at) nowhere in the output, the JSON report, the state directory (cache, memo,
logs) or Glance's store, and no process or mount left behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from pipeline.common.paths import PROJECT_ROOT
from pipeline.glance.connect import connect_local
from tests import hostile as h
from tests.conftest import processes_mentioning, project_images

INVOKE = PROJECT_ROOT / ".venv/bin/invoke"
PROGRESS_LINE = re.compile(r"^fetch \S+: [\d,]+(/[\d,]+)? MiB( \(\d+%\))? [\d,]+ MiB/s$")
PASSWORD = "s3cr3t-PASSW0RD-in-url"


def url_source(root: Path, url: str, **extra) -> Path:
    return h.write(root, h.document({"url": url, "sha256": h.ZERO_PIN, **extra}))


def http_case(mode: str, *expect: str, max_gib: int | None = None):
    def make(root: Path) -> h.Setup:
        address, stop = h.http_server(mode)
        image = {"visibility": "private", **({"max_virtual_gib": max_gib} if max_gib else {})}
        manifest = h.write(root, h.document({"url": f"http://bakery:{PASSWORD}@{address}/w10.raw", "sha256": h.ZERO_PIN},
                                            image=image))
        return h.Setup(manifest, ("manifest.yaml", "source.url", *expect), secret=PASSWORD, cleanup=[stop])

    return make


TOKEN = "t0ken-IN-query-9d2f"


def query_secret_case(query: str, mode: str, *expect: str):
    """A source URL whose query string carries a credential (a token, a Swift temp URL or S3 signature)."""
    def make(root: Path) -> h.Setup:
        if mode == "closed":
            address, cleanup = f"127.0.0.1:{h.closed_port()}", []
        else:
            address, stop = h.http_server(mode)
            cleanup = [stop]
        manifest = url_source(root, f"http://{address}/w10.raw?{query.format(secret=TOKEN)}")
        return h.Setup(manifest, ("manifest.yaml", "source.url", *expect), secret=TOKEN, cleanup=cleanup)

    return make


def artifact_case(edit, *expect: str):
    """An artifact `invoke bake` made, then its record.json edited by hand and its address hashed again, as
    anyone who can write to the artifact can do; `publish --artifact` must refuse it."""
    def make(root: Path) -> h.Setup:
        import hashlib

        manifest = h.with_good_source(root)
        out = root / "artifact"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("OS_")}, "BAKERY_STATE_DIR": str(root / "bake-state"),
               "BAKERY_CACHE_DIR": str(root / "bake-cache"), "BAKERY_GLANCE_PORT": str(h.closed_port())}
        subprocess.run([str(INVOKE), "bake", "--manifest", str(manifest), "--out", str(out), "--release-date", "2026-11-01"],
                       cwd=PROJECT_ROOT, env=env, check=True, capture_output=True, timeout=120)
        record = json.loads((out / "record.json").read_text())
        edit(record)
        data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
        (out / "record.json").write_bytes(data)
        (out / "artifact.json").write_text(json.dumps({"format": "bakery-artifact/2", "id": hashlib.sha256(data).hexdigest()}))
        return h.Setup(None, ("record.json", *expect), command="publish", args=("--artifact", str(out)))

    return make


def edit_manifest_and_rehash_build_id(record: dict) -> None:
    """The strongest edit: the record's own manifest changed, and the build id computed again to match it."""
    from pipeline.manifest import manifest_from_document
    from pipeline.properties.render import template_sha256
    from pipeline.repro.stages import StageIds, build_id

    record["manifest"]["document"]["os"]["type"] = "Windows"
    record["properties"]["os_type"] = "Windows"
    entry = record["manifest"]
    manifest = manifest_from_document(PROJECT_ROOT / entry["path"], entry["document"], release_date=entry["release_date"],
                                      variables=entry["variables"])
    record["build_id"] = build_id(manifest, template_sha256=template_sha256(), stages=StageIds(**record["stages"]))


def closed_port_case(root: Path) -> h.Setup:
    manifest = url_source(root, f"https://bakery:{PASSWORD}@127.0.0.1:{h.closed_port()}/w10.qcow2")
    return h.Setup(manifest, ("manifest.yaml", "source.url", "cannot be reached", "bakery:***@"), secret=PASSWORD)


def file_url_backing(root: Path) -> h.Setup:
    from pipeline.common.digests import sha256_file

    disk = h.qcow2_backing_absolute(root)
    manifest = url_source(root, f"file://{disk}")
    text = manifest.read_text().replace(h.ZERO_PIN, sha256_file(disk))
    manifest.write_text(text)
    return h.Setup(manifest, ("manifest.yaml", "source", "backing_file"))


def virtio_dir_with_link(root: Path) -> h.Setup:
    tree = h.manifests(root) / "virtio-win"
    (tree / "viostor/w10/amd64").mkdir(parents=True)
    (tree / "viostor/w10/amd64/viostor.inf").symlink_to(h.canary_text(root))
    image, sha256 = h.good_raw(root)
    manifest = h.write(root, h.document({"path": image.name, "sha256": sha256},
                                        bake={"virtio_win": {"path": "virtio-win", "sha256": h.ZERO_PIN}}))
    return h.Setup(manifest, ("manifest.yaml", "bake.virtio_win", "viostor.inf", "symbolic link"))


def jinja_case(template_line: str, files: dict[str, str | Path], *expect: str) -> callable:
    """A manifest whose first line is a Jinja statement, next to files (text, or a symlink to a Path)."""
    def make(root: Path) -> h.Setup:
        folder = h.manifests(root)
        for name, content in files.items():
            target = folder / name
            if isinstance(content, Path):
                target.symlink_to(content if content.is_absolute() else root / content)
            else:
                target.write_text(content)
        h.canary_text(root)
        manifest = h.text_manifest(root, template_line + "\n" + h.BASE_TEXT)
        return h.Setup(manifest, ("manifest.yaml", *expect))

    return make


def include_case(include: str, *expect: str, link: str | None = None, nested: bool = False):
    def make(root: Path) -> h.Setup:
        canary = h.canary_text(root, "defaults.yaml")
        folder = h.manifests(root)
        if link:
            (folder / link).symlink_to(canary)
        name = include.replace("{canary}", str(canary))
        if nested:
            (folder / "middle.yaml").write_text(f"include: {json.dumps(name)}\n")
            name = "middle.yaml"
        manifest = h.text_manifest(root, f"include: {json.dumps(name)}\n" + h.BASE_TEXT)
        return h.Setup(manifest, ("include", *expect))

    return make


def text_case(body: str, *expect: str):
    """The base manifest text with `body` appended."""
    return lambda root: h.Setup(h.text_manifest(root, h.BASE_TEXT + body), ("manifest.yaml", *expect))


def override_case(*expect: str, **overrides):
    return lambda root: h.Setup(h.with_good_source(root, **overrides), ("manifest.yaml", *expect))


def set_case(value: str, *expect: str):
    def make(root: Path) -> h.Setup:
        return h.Setup(h.with_good_source(root), ("--set", *expect), args=("--set", f"label={value}"))

    return make


def special_manifest(kind: str):
    def make(root: Path) -> h.Setup:
        path = h.manifests(root) / "manifest.yaml"
        if kind == "fifo":
            os.mkfifo(path)
            return h.Setup(path, ("manifest.yaml", "not a regular file"))
        path.write_bytes(b"name: \xff\xfe not utf-8\n")
        return h.Setup(path, ("manifest.yaml", "not UTF-8"))

    return make


BILLION_LAUGHS = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]" for i in range(8)]) + "\nname: *i\n"
DUPLICATE_OS_TYPE = h.BASE_TEXT.replace('os: {type: windows, version: "10"}', "os:\n  type: windows\n  type: Windows\n  version: '10'")
MBR_BAD_BOOT_FLAG = h.mbr([(0x42, 0x07, (0, 2, 0), 2048, 20000)])
MBR_HYBRID_GPT = h.mbr([(0x00, 0xEE, (0, 2, 0), 1, 30000), (0x80, 0x07, (0, 2, 0), 2048, 20000)])

CASES = [
    # -- disk images that point outside themselves, or are not what they claim ---------------------------------
    h.Case("qcow2-backing-absolute", h.image_case(h.qcow2_backing_absolute, "backing_file", "self-contained")),
    h.Case("qcow2-backing-relative", h.image_case(h.qcow2_backing_relative, "backing_file")),
    h.Case("qcow2-backing-json-protocol", h.image_case(h.qcow2_backing_json, "backing_file")),
    h.Case("qcow2-backing-chain", h.image_case(h.qcow2_backing_qcow2_chain, "backing_file")),
    h.Case("qcow2-backing-declared-qcow2", h.image_case(h.qcow2_backing_absolute, "backing_file", fmt="qcow2")),
    h.Case("qcow2-data-file", h.image_case(h.qcow2_data_file, "data_file")),
    h.Case("qcow2-data-file-raw", h.image_case(lambda r: h.qcow2_data_file(r, raw_data=True), "data_file")),
    h.Case("qcow2-unknown-feature", h.image_case(h.qcow2_unknown_feature, "unknown_features")),
    h.Case("qcow2-declared-raw", h.image_case(h.plain_qcow2, "declared format raw", "content is qcow2", fmt="raw")),
    h.Case("qcow2-2tib-virtual", h.image_case(lambda r: h.plain_qcow2(r, "2T"), "virtual size", "exceeds the limit of 256 GiB")),
    h.Case("qcow2-over-manifest-limit", h.image_case(lambda r: h.plain_qcow2(r, "3G"), "exceeds the limit of 2 GiB", max_gib=2)),
    h.Case("raw-sparse-2tib", h.image_case(h.sparse_raw(2 * 1024 * h.GiB), "exceeds the limit")),
    h.Case("raw-empty", h.image_case(h.empty_raw, "empty")),
    h.Case("raw-not-whole-sectors", h.image_case(h.odd_raw, "512-byte sectors")),
    h.Case("raw-declared-qcow2", h.image_case(h.odd_raw, "declared format qcow2", fmt="qcow2")),
    h.Case("mbr-bad-boot-flag", h.image_case(h.raw_with_boot_sector(MBR_BAD_BOOT_FLAG, "badboot.raw"), "invalid boot flag")),
    h.Case("mbr-hybrid-gpt", h.image_case(h.raw_with_boot_sector(MBR_HYBRID_GPT, "hybrid.raw"), "invalid extra partitions")),
    h.Case("vmdk", h.image_case(h.other_format("vmdk"), "vmdk format")),
    h.Case("vmdk-declared-raw", h.image_case(h.other_format("vmdk"), "vmdk format", fmt="raw")),
    h.Case("vhd", h.image_case(h.other_format("vpc"), "vhd format")),
    h.Case("vhdx", h.image_case(h.other_format("vhdx"), "vhdx format")),
    h.Case("vdi", h.image_case(h.other_format("vdi"), "vdi format")),
    h.Case("qed", h.image_case(h.other_format("qed"), "qed format")),
    h.Case("luks", h.image_case(h.luks, "luks format")),
    h.Case("iso-as-disk", h.image_case(h.iso, "iso format")),
    h.Case("source-is-directory", h.image_case(h.directory_source, "is a directory")),
    h.Case("source-is-fifo", h.image_case(h.fifo_source, "not a regular file")),
    h.Case("source-is-device", h.image_case(lambda r: Path("/dev/zero"), "not a regular file")),
    h.Case("source-missing", h.image_case(lambda r: h.manifests(r) / "nothing.raw", "no such file")),
    h.Case("file-url-backing", file_url_backing),
    h.Case("virtio-dir-symlink", virtio_dir_with_link),
    # -- URLs: credentials never echoed, no unbounded download ---------------------------------------------------
    h.Case("url-bad-scheme", lambda r: h.Setup(url_source(r, "ftp://mirror/w10.qcow2"), ("manifest.yaml", "source.url", "http"))),
    h.Case("url-password-closed-port", closed_port_case),
    h.Case("url-password-404", http_case("404", "HTTP 404", "bakery:***@")),
    h.Case("url-disk-bomb", http_case("endless", "sends more than", max_gib=1)),
    h.Case("url-query-token-404", query_secret_case("token={secret}&x=1", "404", "HTTP 404", "token=***")),
    h.Case("url-query-temp-url-sig", query_secret_case("temp_url_sig={secret}&temp_url_expires=1", "closed", "cannot be reached",
                                                       "temp_url_sig=***")),
    h.Case("url-query-s3-signature", query_secret_case("X-Amz-Algorithm=AWS4&X-Amz-Signature={secret}", "404", "X-Amz-Signature=***")),
    h.Case("url-query-access-token", query_secret_case("a=b&access_token={secret}", "closed", "access_token=***")),
    h.Case("url-query-sig", query_secret_case("sig={secret}", "404", "sig=***")),
    # -- templates that reach outside the manifest's folder --------------------------------------------------
    h.Case("jinja-include-symlink", jinja_case('{% include "link.txt" %}', {"link.txt": Path("outside/canary.txt")}, "outside the manifest's folder")),
    h.Case("jinja-import-symlink", jinja_case('{% import "macros.j2" as m %}', {"macros.j2": Path("outside/canary.txt")}, "outside the manifest's folder")),
    h.Case("jinja-from-import-symlink", jinja_case('{% from "macros.j2" import x %}', {"macros.j2": Path("outside/canary.txt")}, "outside the manifest's folder")),
    h.Case("jinja-include-dotdot", jinja_case('{% include "../outside/canary.txt" %}', {}, "not found")),
    h.Case("jinja-include-absolute", jinja_case('{% include "/etc/passwd" %}', {}, "not found")),
    h.Case("jinja-include-dir-symlink", jinja_case('{% include "up/canary.txt" %}', {"up": Path("outside")}, "outside the manifest's folder")),
    h.Case("jinja-extends-symlink", jinja_case('{% extends "base.j2" %}', {"base.j2": Path("outside/canary.txt")}, "outside the manifest's folder")),
    h.Case("jinja-sandbox-escape", jinja_case("# {{ ''.__class__.__mro__[1].__subclasses__() }}", {}, "template error")),
    h.Case("jinja-output-bomb", jinja_case("# {% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", {}, "exceeds")),
    h.Case("jinja-runaway-loop", jinja_case("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", {},
                                            "longer than")),
    # -- includes ----------------------------------------------------------------------------------------------------
    h.Case("include-absolute", include_case("{canary}", "outside the manifest's folder")),
    h.Case("include-dotdot", include_case("../outside/defaults.yaml", "outside the manifest's folder")),
    h.Case("include-symlink", include_case("defaults.yaml", "outside the manifest's folder", link="defaults.yaml")),
    h.Case("include-nested-escape", include_case("../outside/defaults.yaml", "outside the manifest's folder", nested=True)),
    h.Case("include-etc-passwd", include_case("/etc/passwd", "outside the manifest's folder")),
    # -- YAML ----------------------------------------------------------------------------------------------------------
    h.Case("duplicate-top-key", text_case('name: "second name"', "name", "duplicate key")),
    h.Case("duplicate-os-type", lambda r: h.Setup(h.text_manifest(r, DUPLICATE_OS_TYPE), ("manifest.yaml:5", "os.type", "duplicate key",
                                                                                        "also at line 4"))),
    h.Case("duplicate-sha256", lambda r: h.Setup(h.write(r, h.BASE_TEXT + "source:\n  path: good.raw\n  sha256: '" + h.ZERO_PIN
                                                         + "'\n  sha256: '" + "1" * 64 + "'\n"),
                                                 ("manifest.yaml", "source.sha256", "duplicate key"))),
    h.Case("duplicate-property", text_case("properties:\n  hw_disk_bus: virtio\n  hw_disk_bus: ide", "properties.hw_disk_bus", "duplicate key")),
    h.Case("alias-bomb", text_case(BILLION_LAUGHS.replace("name: *i\n", "lint: {suppress: *i}\n"), "lint.suppress", "alias bomb")),
    h.Case("alias-recursive", text_case("properties: &p\n  loop: *p", "refers to itself")),
    h.Case("python-object-tag", text_case("properties: !!python/object/apply:os.system ['true']", "invalid YAML")),
    h.Case("top-level-list", lambda r: h.Setup(h.write(r, "- a\n- b\n"), ("manifest.yaml", "mapping"))),
    h.Case("manifest-10mb-name", lambda r: h.Setup(h.write(r, 'name: "' + "x" * (10 * 1024 * 1024) + '"\n'),
                                                   ("manifest.yaml", "more than a manifest may be"))),
    h.Case("manifest-not-utf8", special_manifest("binary")),
    h.Case("manifest-fifo", special_manifest("fifo")),
    # -- values Glance would refuse, refused before any build ----------------------------------------------------
    h.Case("name-256", override_case("name", "at most 255", name="W" * 256)),
    h.Case("tags-129", override_case("image.tags", "129 tags", image={"tags": [f"t{i}" for i in range(129)]})),
    h.Case("tag-256", override_case("image.tags.0", "at most 255", image={"tags": ["t" * 256]})),
    h.Case("min-disk-int32", override_case("image.min_disk", "2147483647", image={"min_disk": 2**31})),
    h.Case("min-ram-int32", override_case("image.min_ram", "2147483647", image={"min_ram": 2**31})),
    h.Case("max-virtual-zero", override_case("image.max_virtual_gib", "from 1", image={"max_virtual_gib": 0})),
    h.Case("bell-in-name", override_case("name", "U+0007", name="Windows\a 10")),
    h.Case("rlo-in-family", override_case("family.os_distro_major", "U+202E", family={"os_distro_major": "w10\u202eentx64"})),
    h.Case("escape-in-property", override_case("properties.hw_vif_model", "U+001B", properties={"hw_vif_model": "virtio\x1b[2J"})),
    h.Case("newline-in-tag", override_case("image.tags.0", "U+000A", image={"tags": ["a\nb"]})),
    h.Case("zero-width-in-os-type", override_case("os.type", "U+200B", os={"type": "win\u200bdows", "version": "10"})),
    h.Case("property-key-256", override_case("at most 255", properties={"k" * 256: "v"})),
    h.Case("property-value-70k", override_case("properties.hw_video_model", "70,000 bytes", properties={"hw_video_model": "v" * 70000})),
    h.Case("unknown-suppressed-rule", override_case("lint.suppress.no-such-rule", "unknown rule", lint={"suppress": {"no-such-rule": "x"}})),
    h.Case("set-control-character", set_case("a\x07b", "label", "control")),
    # -- Glance's own rules, before any build ------------------------------------------------------------------------
    h.Case("name-empty", override_case("name", "is empty", name="")),
    h.Case("name-blank", override_case("name", "is empty", name="   ")),
    h.Case("name-emoji", override_case("name", "U+1F600", "4-byte", name="Windows 10 \U0001F600")),
    h.Case("property-emoji", override_case("properties.hw_video_model", "U+1F4A9", properties={"hw_video_model": "virtio\U0001F4A9"})),
    h.Case("tag-emoji", override_case("image.tags.0", "4-byte", image={"tags": ["\U0001F600"]})),
    h.Case("os-type-in-properties", override_case("properties.os_type", "os-type-windows", properties={"os_type": "Windows"})),
    # -- values that reach a QEMU argument ---------------------------------------------------------------------------
    h.Case("machine-type-kernel", override_case("properties.hw_machine_type", "machine-type", "not a machine type",
                                                properties={"hw_machine_type": "q35,kernel=/etc/hostname,initrd=/etc/passwd"})),
    h.Case("machine-type-suppressed-still-refused", override_case(
        "canary", "hw_machine_type", "not a machine type", properties={"hw_machine_type": "pc,firmware=/etc/passwd"},
        lint={"suppress": {"machine-type": "hostile test"}}, canary={"ready": "serial-marker"})),
    h.Case("tpm-model-suppressed-still-refused", override_case(
        "canary", "hw_tpm_model", properties={"hw_machine_type": "q35", "hw_tpm_version": "2.0", "hw_tpm_model": "tpm-crb,id=x"},
        lint={"suppress": {"enum-value": "hostile test"}}, canary={"ready": "serial-marker"})),
    # -- numbers that are not numbers -----------------------------------------------------------------------------------
    h.Case("provision-max-reboots-huge", override_case("provision.max_reboots", "from 0 to 100",
                                                       provision={"windows_update": {"max_rounds": 1}, "max_reboots": 10**30})),
    h.Case("provision-memory-huge", override_case("provision.memory_mib", "1,048,576",
                                                  provision={"windows_update": {"max_rounds": 1}, "memory_mib": 10**12})),
    h.Case("canary-timeout-nan", override_case("canary.timeout_minutes", "nan", canary={"timeout_minutes": float("nan")})),
    h.Case("canary-timeout-inf", override_case("canary.timeout_minutes", "inf", canary={"timeout_minutes": float("inf")})),
    h.Case("canary-memory-huge", override_case("canary.memory_mib", "1,048,576", canary={"memory_mib": 10**12})),
    h.Case("canary-factor-negative", override_case("canary.tcg_timeout_factor", "above 0", canary={"tcg_timeout_factor": -1})),
    # -- an artifact edited by hand and hashed again -----------------------------------------------------------------------
    h.Case("artifact-os-type-edited", artifact_case(lambda r: r["properties"].__setitem__("os_type", "Windows"),
                                                    "properties.os_type", "'Windows'", "edited")),
    h.Case("artifact-int-property", artifact_case(lambda r: r["properties"].__setitem__("hw_disk_bus", 1),
                                                  "properties.hw_disk_bus", "expected a string")),
    h.Case("artifact-build-id-path", artifact_case(lambda r: r.__setitem__("build_id", "../../../etc/passwd"), "build_id", "64 hex digits")),
    h.Case("artifact-stage-id-path", artifact_case(lambda r: r["stages"].__setitem__("build", "../cache/x"), "stages.build", "64 hex digits")),
    h.Case("artifact-manifest-and-build-id", artifact_case(edit_manifest_and_rehash_build_id, "os.type", "os-type-windows")),
    h.Case("artifact-core-edited", artifact_case(lambda r: r["core"].__setitem__("min_disk", 0), "core.min_disk", "edited")),
    h.Case("set-huge-value", set_case("v" * 5000, "label", "at most 4,096")),
]


@pytest.fixture
def local_images(glance_server):
    target = connect_local(glance_server)
    return lambda: {image["id"] for image in project_images(target)}


def run_cli(setup: h.Setup, state: Path, port: int, report: Path, *, cache: Path | None = None,
            date: str = "2026-11-01") -> subprocess.CompletedProcess:
    """The CLI as a user runs it; `state` holding the local Glance's state means it talks to that Glance."""
    dated = ("--release-date", date) if setup.command != "publish" else ()  # an artifact's release date is its record's
    args = [str(INVOKE), setup.command, *(("--manifest", str(setup.manifest)) if setup.manifest else ()),
            *dated, "--json", str(report), *setup.args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update({"BAKERY_STATE_DIR": str(state), "BAKERY_GLANCE_PORT": str(port), "BAKERY_CACHE_DIR": str(cache or state / "cache")})
    return subprocess.run(args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)


def files_holding(root: Path, needle: bytes) -> list[Path]:
    found = []
    for path in root.rglob("*") if root.is_dir() else ():
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
            found.append(path)
    return found


def left_behind(marker: str) -> list[str]:
    """Processes and mounts whose command line or mount point mention the test's directory."""
    mounts = [line for line in Path("/proc/mounts").read_text().splitlines() if marker in line]
    return mounts + processes_mentioning(marker)


def assert_refused(setup: h.Setup, tmp_path: Path, glance_server, before: set[str], after_images, *, during_work: bool = False) -> str:
    """during_work: the refusal comes in the middle of a bake, after its status lines; it is still the one
    error line, the last line, with no traceback."""
    state, report = tmp_path / "state", tmp_path / "report.json"
    store_before = set((glance_server.root / "images").iterdir())
    try:
        proc = run_cli(setup, state, glance_server.port, report)
    finally:
        for stop in setup.cleanup:
            stop()
    lines = proc.stderr.splitlines()
    assert proc.returncode == 1, proc.stderr
    # A download's progress lines appear or not depending on the machine's speed: the verdict does not. They are
    # set aside here, and must never show a percentage of an unknown or exceeded size.
    progress = [line for line in lines if PROGRESS_LINE.match(line)]
    assert all(not re.search(r"/0 MiB|\(\d{4,}%\)", line) for line in progress), progress
    lines = [line for line in lines if line not in progress]
    if during_work:
        lines = lines[-1:]
        assert [line for line in proc.stderr.splitlines() if line.startswith("error: ")] == lines, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    line = lines[0]
    for fragment in setup.expect:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert len(line) <= 1100
    recorded = json.loads(report.read_text())
    assert recorded["ok"] is False and recorded["error"] == line.removeprefix("error: ")
    assert after_images() == before, "Glance changed"
    assert set((glance_server.root / "images").iterdir()) == store_before, "Glance's store changed"
    for secret in filter(None, (h.CANARY, setup.secret)):
        assert secret not in proc.stdout + proc.stderr + report.read_text()
        assert files_holding(state, secret.encode()) == []
    assert ".bakery/work" not in line and "image.raw.part" not in line  # the user's input is named, not our files
    assert left_behind(str(tmp_path)) == []
    return line


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_refused_in_one_line(case, tmp_path, glance_server, local_images):
    before = local_images()
    setup = case.make(tmp_path)
    line = assert_refused(setup, tmp_path, glance_server, before, local_images)
    print(f"{case.id}: {line}")


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 100


# -- the stage cache answers only for inputs that are well-formed, and says when they are absent ------------------


@pytest.fixture
def cached_qcow2(tmp_path, glance_server, session_state):
    """A qcow2 source built once through the CLI (so its raw conversion is in the stage cache); its images
    are deleted afterwards."""
    from pipeline.common.digests import sha256_file

    family = {"os_distro_major": f"w10cache{os.getpid()}{tmp_path.name[-6:]}"}
    disk = h.plain_qcow2(tmp_path, "8M", name="golden.qcow2")
    sha256 = sha256_file(disk)
    cache = tmp_path / "cache"

    def manifest(**source) -> Path:
        return h.write(tmp_path, h.document({"path": "golden.qcow2", "sha256": sha256, **source}, family=family))

    def cli(command: str, manifest_path: Path, date: str = "2026-11-01") -> tuple[subprocess.CompletedProcess, dict]:
        report = tmp_path / f"{command}-{date}.json"
        setup = h.Setup(manifest_path, (), command=command)
        proc = run_cli(setup, session_state, glance_server.port, report, cache=cache, date=date)
        return proc, json.loads(report.read_text())

    first, record = cli("build-and-publish", manifest(format="qcow2"))
    assert first.returncode == 0, first.stderr
    assert record["details"]["cache"]["build"] == "miss"
    yield disk, manifest, cli, cache
    target = connect_local(glance_server)
    for image in project_images(target):
        if image.get("os_distro_major") == family["os_distro_major"]:
            target.glance.images.delete(image["id"])


def test_a_cached_build_is_served_without_its_source_and_plan_agrees(cached_qcow2):
    disk, manifest, cli, _ = cached_qcow2
    disk.unlink()
    for command in ("plan", "build-and-publish"):
        proc, record = cli(command, manifest(format="qcow2"))
        assert proc.returncode == 0, proc.stderr
        assert record["details"]["cache"]["build"] == "hit"
        assert any("is not at hand" in note for note in record["details"]["inputs_not_at_hand"])
        assert "served from the stage cache" in proc.stderr


def test_a_cached_build_of_an_unreachable_url_is_served_and_plan_agrees(cached_qcow2):
    disk, manifest, cli, _ = cached_qcow2
    path = manifest(format="qcow2")
    text = path.read_text().replace("path: golden.qcow2", f"url: http://127.0.0.1:{h.closed_port()}/golden.qcow2")
    path.write_text(text)
    for command in ("plan", "build-and-publish"):
        proc, record = cli(command, path)
        assert proc.returncode == 0, proc.stderr
        assert any("not fetched" in note for note in record["details"]["inputs_not_at_hand"])


@pytest.mark.parametrize("command", ["plan", "build-and-publish"])
def test_the_cache_does_not_serve_a_malformed_source(cached_qcow2, command):
    disk, manifest, cli, _ = cached_qcow2
    disk.unlink()
    disk.mkdir()
    proc, record = cli(command, manifest(format="qcow2"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "source (" in proc.stderr and "is a directory" in proc.stderr


@pytest.mark.parametrize("present", [True, False], ids=["source-present", "source-absent"])
def test_the_cache_does_not_serve_a_contradicting_format(cached_qcow2, present):
    disk, manifest, cli, _ = cached_qcow2
    if not present:
        disk.unlink()
    for command in ("plan", "build-and-publish"):
        proc, _ = cli(command, manifest(format="raw"))
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert "declared format raw" in proc.stderr and "qcow2" in proc.stderr


def test_a_tampered_cache_entry_is_dropped_and_built_again(cached_qcow2):
    disk, manifest, cli, cache = cached_qcow2
    (entry,) = (cache / "build").iterdir()
    with open(entry / "image.raw", "r+b") as raw:  # a qcow2 header where the raw bytes were
        raw.write(h.plain_qcow2(cache.parent, "8M", name="intruder.qcow2").read_bytes()[:512])
    proc, record = cli("build-and-publish", manifest(format="qcow2"), date="2026-12-01")
    assert proc.returncode == 0, proc.stderr
    assert "dropping the entry and building again" in proc.stderr
    assert record["details"]["cache"]["build"] == "miss"


# -- a Windows volume whose links point at the build host ----------------------------------------------------------


def linked_disk(media, root: Path, link: str, target: Path) -> tuple[Path, str]:
    """A copy of the synthetic Windows 10 disk with a symbolic link at `link` on its NTFS volume."""
    import shutil

    from pipeline.common.digests import sha256_file
    from pipeline.windows.inspection import windows_volume

    source, _ = media.disk("w10")
    disk = h.manifests(root) / "linked.raw"
    shutil.copyfile(source, disk)
    with windows_volume(disk, "raw", root / "edit", writable=True) as found:
        path = found.root / link
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    return disk, sha256_file(disk)


@pytest.mark.parametrize("link, expect", [
    ("Windows/Drivers", r"symbolic link at Windows\Drivers"),
    ("Windows/System32/config/SYSTEM", r"symbolic link at Windows\System32\config\SYSTEM"),
    ("Windows/Setup", r"symbolic link at Windows\Setup"),
], ids=["staging-folder", "system-hive", "setup-scripts"])
def test_a_link_in_the_windows_volume_is_never_followed(media, tmp_path, glance_server, local_images, link, expect):
    host = h.outside(tmp_path)
    h.canary_text(tmp_path)
    target = host / "canary.txt" if link.endswith("SYSTEM") else host
    before_host = sorted(p.name for p in host.iterdir())
    disk, sha256 = linked_disk(media, tmp_path, link, target)
    iso, iso_sha256 = media.iso("0.1.240")
    manifest = h.write(tmp_path, h.document({"path": disk.name, "sha256": sha256}, bake={"virtio_win": {"path": str(iso), "sha256": iso_sha256}}))
    before = local_images()
    line = assert_refused(h.Setup(manifest, ("manifest.yaml", "source (", expect)), tmp_path, glance_server, before, local_images,
                          during_work=True)
    assert "refused, the bakery never follows a link" in line
    assert sorted(p.name for p in host.iterdir()) == before_host  # nothing written on the host through the link


def test_volume_paths_refuse_links_without_the_kernel_guard(tmp_path):
    """The confined() check alone (what protects a non-root bake, where nosymfollow cannot be set)."""
    from pipeline.common.errors import BakeryError
    from pipeline.windows.volume import confined

    (tmp_path / "Windows/System32").mkdir(parents=True)
    (tmp_path / "Windows/Drivers").symlink_to("/etc")
    assert confined(tmp_path, r"Windows\System32\config", label="disk") == tmp_path / "Windows/System32/config"
    with pytest.raises(BakeryError, match=r"disk: the Windows volume has a symbolic link at Windows\\Drivers \(-> /etc\)"):
        confined(tmp_path, r"Windows\Drivers\VirtIO\viostor", label="disk")
    with pytest.raises(BakeryError, match="leaves the Windows volume"):
        confined(tmp_path, r"Windows\..\..\etc", label="disk")


def test_a_bake_failure_names_the_source_not_the_work_file(tmp_path, glance_server, local_images, media):
    """A disk with no partition table fails in the bake; the line names the manifest's source."""
    image, sha256 = h.good_raw(tmp_path)
    iso, iso_sha256 = media.iso("0.1.240")
    manifest = h.write(tmp_path, h.document({"path": image.name, "sha256": sha256}, bake={"virtio_win": {"path": str(iso), "sha256": iso_sha256}}))
    line = assert_refused(h.Setup(manifest, ("manifest.yaml", "source (", "good.raw", "no partition table")), tmp_path,
                          glance_server, local_images(), local_images, during_work=True)
    assert "work" not in line
