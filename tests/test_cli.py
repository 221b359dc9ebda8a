"""The commands as a release engineer runs them: one-line errors, JSON reports, no secret anywhere."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from pipeline.common.paths import PROJECT_ROOT
from pipeline.glance.local import LocalGlance
from tests.conftest import MiB, free_port, make_image, write_manifest

SECRET = "S3cr3t-" + uuid.uuid4().hex
INVOKE = str(Path(sys.executable).parent / "invoke")


def invoke(*args: str, state: Path, port: int, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update({"BAKERY_STATE_DIR": str(state), "BAKERY_GLANCE_PORT": str(port), **(extra_env or {})})
    return subprocess.run([INVOKE, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def family_manifest(tmp_path):
    image = tmp_path / "base.raw"
    sha256 = make_image(image, 3 * MiB, seed="cli")
    family = f"cli{uuid.uuid4().hex[:8]}"  # the CLI always uses the local project: keep families apart
    return lambda **overrides: write_manifest(
        tmp_path, image, sha256, family={"os_distro_major": family}, **overrides
    )


def test_build_and_publish_writes_a_json_report(glance_server, session_state, tmp_path, family_manifest):
    manifest = family_manifest()
    report_path = tmp_path / "report.json"
    args = ("build-and-publish", "--manifest", str(manifest), "--json", str(report_path))
    first = invoke(*args, "--release-date", "2026-10-01", state=session_state, port=glance_server.port)
    assert first.returncode == 0, first.stderr
    first_id = json.loads(report_path.read_text())["image"]["id"]

    second = invoke(*args, "--release-date", "2026-11-01", state=session_state, port=glance_server.port)
    assert second.returncode == 0, second.stderr
    report = json.loads(report_path.read_text())
    assert report["ok"] is True and report["error"] is None
    image = report["image"]
    assert image["checksum"] and image["os_hash_value"] and image["size"] == 3 * MiB and image["virtual_size"] == 3 * MiB
    assert image["properties"]["os_type"] == "windows" and image["properties"]["recommended"] == "true"
    assert [d["id"] for d in report["demoted"]] == [first_id]
    assert {"manifest", "source", "build", "properties", "publish", "release"} <= set(report["timings"])
    assert image["name"] in second.stdout  # the human summary


def test_bad_manifest_is_one_line_and_glance_untouched(glance_server, session_state, tmp_path, family_manifest):
    from pipeline.glance.connect import connect_local

    before = len(list(connect_local(glance_server).glance.images.list()))
    manifest = family_manifest(os={"type": "Windows", "version": "10"})
    report_path = tmp_path / "r.json"
    proc = invoke("build-and-publish", "--manifest", str(manifest), "--json", str(report_path), state=session_state, port=glance_server.port)
    assert_one_line_error(proc, "os-type-windows", "os_type", "nothing was published")
    report = json.loads(report_path.read_text())
    assert report["ok"] is False and "os-type-windows" in report["error"]
    assert len(list(connect_local(glance_server).glance.images.list())) == before


def test_plan_prints_without_changing(glance_server, session_state, family_manifest):
    proc = invoke("plan", "--manifest", str(family_manifest()), state=session_state, port=glance_server.port)
    assert proc.returncode == 0, proc.stderr
    assert "would publish" in proc.stdout and "would demote" in proc.stdout


def test_lint_task_reports_and_fails(glance_server, session_state, family_manifest):
    good = invoke("lint", "--manifest", str(family_manifest()), state=session_state, port=glance_server.port)
    assert good.returncode == 0 and "no findings" in good.stdout
    assert json.loads(good.stdout[good.stdout.index("{"):])["os_type"] == "windows"
    bad = invoke("lint", "--manifest", str(family_manifest(properties={"hw_disk_bus": "virtio-blk"})), state=session_state, port=glance_server.port)
    assert_one_line_error(bad, "enum-value", "hw_disk_bus")
    assert "why:" in bad.stdout and "see: glance etc/metadefs" in bad.stdout


def test_glance_status_when_down(tmp_path):
    proc = invoke("glance-status", state=tmp_path, port=free_port())
    assert_one_line_error(proc, "not running")


def test_glance_up_on_a_busy_port(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        proc = invoke("glance-up", state=tmp_path, port=busy.getsockname()[1])
    assert_one_line_error(proc, "is in use", "BAKERY_GLANCE_PORT")


def test_stale_pid_file_is_reported_then_replaced(tmp_path):
    server = LocalGlance(root=tmp_path / "glance", port=free_port())
    server.root.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    server.pid_file.write_text(f"{dead.pid}\n")
    status = invoke("glance-status", state=tmp_path, port=server.port)
    assert_one_line_error(status, "stale pid file")
    up = invoke("glance-up", state=tmp_path, port=server.port)
    try:
        assert up.returncode == 0, up.stderr
        assert "up at" in up.stderr
        assert invoke("glance-status", state=tmp_path, port=server.port).returncode == 0
    finally:
        assert invoke("glance-down", state=tmp_path, port=server.port).returncode == 0
    assert not server.pid_file.exists()


class _EchoingKeystone(http.server.BaseHTTPRequestHandler):
    """A hostile identity endpoint: its error pages quote the request, password included."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        payload = json.dumps({"error": {"code": 401, "title": "Unauthorized", "message": f"bad credentials in {body.decode()}"}})
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload.encode())

    def do_GET(self):  # version discovery answers normally, so the password really gets sent
        href = f"http://{self.headers['Host']}/v3/"
        payload = json.dumps({"version": {"id": "v3.14", "status": "stable", "links": [{"rel": "self", "href": href}],
                                          "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def echoing_keystone():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoingKeystone)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v3"
    server.shutdown()


@pytest.mark.parametrize("how", ["clouds.yaml", "environment"])
def test_no_secret_in_output_or_report(tmp_path, family_manifest, echoing_keystone, how):
    auth = {"auth_url": echoing_keystone, "username": "release-bot", "password": SECRET, "project_name": "images",
            "user_domain_name": "Default", "project_domain_name": "Default"}
    report_path = tmp_path / "report.json"
    if how == "clouds.yaml":
        clouds = tmp_path / "clouds.yaml"
        clouds.write_text(json.dumps({"clouds": {"prod": {"auth": auth, "region_name": "RegionOne"}}}))
        env = {"OS_CLIENT_CONFIG_FILE": str(clouds), "OS_CLOUD": "prod"}
    else:
        env = {f"OS_{k.upper()}": v for k, v in auth.items()}
    proc = invoke("plan", "--manifest", str(family_manifest()), "--json", str(report_path), state=tmp_path / "state",
                  port=free_port(), extra_env=env)
    assert_one_line_error(proc, "authentication failed")
    everything = proc.stdout + proc.stderr + report_path.read_text()
    assert SECRET not in everything
    assert "release-bot" in everything or "***" in everything or "401" in everything  # the error still says what failed
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path


# -- numbers, ports and choices from options and the environment --------------------------------------------------

NUMERIC_REFUSALS = [
    # (arguments, extra environment, the name the error must blame)
    (("cloud-up", "--token-lifetime", "-5"), {}, "--token-lifetime"),
    (("cloud-up", "--token-lifetime", "abc"), {}, "--token-lifetime"),
    (("cloud-up", "--production-shaped", "--mariadb-port", "0x50"), {}, "--mariadb-port"),
    (("cloud-up", "--consumers", "--nova-port", "nan"), {}, "--nova-port"),
    (("cloud-up",), {"BAKERY_CLOUD_KEYSTONE_PORT": "99999"}, "BAKERY_CLOUD_KEYSTONE_PORT"),
    (("cloud-status",), {"BAKERY_CLOUD_GLANCE_PORT": "1e3"}, "BAKERY_CLOUD_GLANCE_PORT"),
    (("glance-status",), {"BAKERY_GLANCE_PORT": "abc"}, "BAKERY_GLANCE_PORT"),
    (("ci", "--cache-dir", "/srv/cache", "--max-job-minutes", "1e3"), {}, "--max-job-minutes"),
    (("ci", "--cache-dir", "/srv/cache", "--max-job-minutes", "0"), {}, "--max-job-minutes"),
    (("cache-gc", "--max-gib", "nan"), {}, "--max-gib"),
    (("cache-gc", "--max-gib", "-1"), {}, "--max-gib"),
    (("cache-gc",), {"BAKERY_CACHE_MAX_GIB": "inf"}, "BAKERY_CACHE_MAX_GIB"),
    (("synthetic", "--windows", "w10", "--out", "{tmp}/disk.raw", "--size-gib", "x"), {}, "--size-gib"),
    (("synthetic", "--windows", "w10", "--out", "{tmp}/disk.raw", "--size-gib", "100000"), {}, "--size-gib"),
    (("cache-ls",), {"BAKERY_CACHE_DIR": "{tmp}/state/cache/kept.txt"}, "BAKERY_CACHE_DIR"),
    (("glance-up",), {"BAKERY_STATE_DIR": "{tmp}/state/cache/kept.txt"}, "BAKERY_STATE_DIR"),
]


@pytest.mark.parametrize("args, env, blamed", NUMERIC_REFUSALS, ids=lambda case: " ".join(case) if isinstance(case, tuple) else None)
def test_a_bad_number_is_one_line_naming_the_option_and_changes_nothing(tmp_path, args, env, blamed):
    """Invoke converts numeric defaults itself (a traceback for "abc"), and float() takes nan and inf, which make
    limits that never trigger: every number is checked where it enters, before anything starts or is evicted."""
    state = tmp_path / "state"
    kept = state / "cache" / "kept.txt"  # cache-gc with a negative limit used to evict everything
    kept.parent.mkdir(parents=True)
    kept.write_text("a cache entry's file")
    proc = invoke(*(arg.format(tmp=tmp_path) for arg in args), state=state, port=free_port(),
                  extra_env={name: value.format(tmp=tmp_path) for name, value in env.items()})
    line = assert_one_line_error(proc, blamed, "expected")
    assert "internal error" not in line
    assert kept.exists()
    assert not list(state.rglob("*.pid")), "a server was started before the setting was checked"
    assert not (tmp_path / "disk.raw").exists()


@pytest.mark.parametrize("where", ["/proc/no-such/report.json", "{tmp}", "{tmp}/a-file/report.json"])
def test_a_report_path_that_cannot_be_written_is_refused_before_any_work(tmp_path, where):
    (tmp_path / "a-file").write_text("not a folder")
    path = where.format(tmp=tmp_path)
    proc = invoke("synthetic", "--windows", "w10", "--out", str(tmp_path / "disk.raw"), "--json", path, state=tmp_path / "state",
                  port=free_port())
    line = assert_one_line_error(proc, f"--json {path}")
    assert "Traceback" not in proc.stderr and "internal error" not in line
    assert not (tmp_path / "disk.raw").exists(), "the work ran although its report could not be written"


def test_a_report_folder_that_does_not_exist_yet_is_created(tmp_path):
    report = tmp_path / "reports" / "cache" / "ls.json"
    proc = invoke("cache-ls", "--json", str(report), state=tmp_path / "state", port=free_port())
    assert proc.returncode == 0, proc.stderr
    assert json.loads(report.read_text())["ok"] is True


def test_an_empty_state_directory_variable_means_the_default_not_the_current_directory(tmp_path):
    proc = invoke("glance-status", state=tmp_path, port=free_port(), extra_env={"BAKERY_STATE_DIR": ""})
    assert_one_line_error(proc, str(PROJECT_ROOT / ".bakery" / "glance"))  # not running there, or running on another port


def test_a_cloud_that_cannot_start_whole_stops_what_it_started(tmp_path):
    """Glance's port is taken: Keystone starts first, then Glance is refused. cloud-up says so in one line and
    stops the Keystone it started, rather than leaving half a cloud holding its port."""
    state = tmp_path / "state"
    keystone_port = free_port()
    with socket.create_server(("127.0.0.1", 0)) as busy:
        env = {"BAKERY_CLOUD_KEYSTONE_PORT": str(keystone_port), "BAKERY_CLOUD_GLANCE_PORT": str(busy.getsockname()[1])}
        proc = invoke("cloud-up", state=state, port=free_port(), extra_env=env)
    assert_one_line_error(proc, "is in use")
    assert "Keystone is up" not in proc.stdout
    assert (state / "cloud" / "keystone").is_dir(), "the test must reach the point where Keystone was started"
    with socket.socket() as probe:  # nothing answers on Keystone's port any more
        assert probe.connect_ex(("127.0.0.1", keystone_port)) != 0
    from pipeline.glance.keystone import LocalKeystone
    assert not LocalKeystone(state / "cloud" / "keystone", keystone_port).orphans()


@pytest.mark.parametrize("args", [("lint",), ("explain",), ("rebuild",), ("lint", "--manifest", "m.yaml", "--image", "x"),
                                  ("explain", "--manifest", "m.yaml", "--image", "x"), ("rebuild", "--image", "x", "--lock", "l")])
def test_a_command_of_a_manifest_or_an_image_is_told_exactly_one(tmp_path, args):
    """Neither used to be a TypeError for lint and explain (and lint printed "no findings" above it); both took one
    silently; rebuild named options it does not have (--from-image)."""
    proc = invoke(*args, state=tmp_path / "state", port=free_port())
    line = assert_one_line_error(proc, f"{args[0]}: give exactly one of ")
    assert "internal error" not in line and "--from-" not in line
    assert "no findings" not in proc.stdout
    assert not (tmp_path / "state" / "glance").exists(), "no Glance is needed to refuse this"


def test_a_local_glance_asked_for_on_another_port_says_where_it_runs(glance_server):
    """The state directory's Glance runs on one port and a command asks for another: say so at once, instead of
    waiting a minute for an answer on a port nothing listens on."""
    other = free_port()
    for command in ("glance-up", "glance-status"):
        proc = invoke(command, state=glance_server.root.parent, port=other)
        assert_one_line_error(proc, f"runs on port {glance_server.port}", f"not on {other}")
    assert glance_server.status().healthy


# -- values from a server on the terminal -----------------------------------------------------------------------

HOSTILE_NAME = "w10 evil\x1b[31mRED\x1b]8;;http://example.invalid\x07link\nerror: forged line\u202e[bold]markup[/bold]"


def assert_terminal_safe(text: str) -> None:
    assert not any(ch in text for ch in "\x1b\x07\u202e"), repr(text)
    assert not any(line.startswith("error: forged") for line in text.splitlines()), text


def test_names_and_values_from_a_server_cannot_restyle_the_terminal_or_forge_a_line(glance_server, tmp_path):
    """Anyone who can name an image in the project (or a public one) writes into audit's, lifecycle's and the summary's
    output: escape sequences, a terminal hyperlink, a line break with a fake error, a right-to-left override and
    rich markup must all arrive as visible text."""
    from pipeline.glance.connect import connect_local

    target = connect_local(glance_server)
    image = target.glance.images.create(name=HOSTILE_NAME, disk_format="raw", container_format="bare", os_distro="windows",
                                        os_type="windows", os_distro_major=f"evil{uuid.uuid4().hex[:6]}", recommended="true",
                                        x_note="a\nerror: forged too\x1b[2J")
    try:
        proc = invoke("audit", state=glance_server.root.parent, port=glance_server.port)
        assert image["id"] in proc.stdout, proc.stdout + proc.stderr
        assert_terminal_safe(proc.stdout + proc.stderr)
        assert "\\x1b[31mRED" in proc.stdout and "[bold]markup[/bold]" in proc.stdout
    finally:
        target.glance.images.delete(image["id"])


def test_the_summary_table_shows_a_server_name_as_text():
    import io

    from rich.console import Console

    from pipeline.common.report import Report, print_summary

    report = Report("build-and-publish")
    report.ok = True
    report.demoted = [{"name": HOSTILE_NAME, "id": "0" * 8}]
    report.error = "image named " + HOSTILE_NAME
    out = io.StringIO()
    print_summary(report, Console(file=out, width=300, force_terminal=True, color_system="truecolor"))
    shown = out.getvalue()
    assert "[bold]markup[/bold]" in shown and "\\x1b[31mRED" in shown
    plain = shown.replace("\x1b[1m", "").replace("\x1b[0m", "").replace("\x1b[3m", "")  # the table's own styles
    assert "\x1b[31m" not in plain and "\x1b]8" not in plain and "\u202e" not in plain
    assert not any(line.lstrip("│ ").startswith("error: forged") for line in shown.splitlines())
