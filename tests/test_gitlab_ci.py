"""The generated .gitlab-ci.yml, run for real by gitlab-ci-local (a GitLab CI runner that works offline, shell
executor) on a catalog of synthetic families against the local Glance; and checked against GitLab's CI JSON
schema as gitlab-ci-local ships it.

gitlab-ci-local does not implement resource_group (its 4.65.1 source has no trace of it): what serializes
the publishes of one family inside a pipeline here is the `needs:` chain the generator adds, and that is
what the timestamps show. Across pipelines, GitLab's resource_group does it; it is only checked to be there.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.ci import gitlab
from tests.conftest import PROJECT_ROOT, MiB, make_image, run_invoke, write_manifest

GITLAB_CI_LOCAL = PROJECT_ROOT / ".venv/node/node_modules/.bin/gitlab-ci-local"
# (manifest, family major, extra properties): two BIOS families, one UEFI, and a second release of the first
CATALOG = (("w10a", "w10gla", {}), ("w10a-hotfix", "w10gla", {}), ("w10b", "w10glb", {}),
           ("w10u", "w10glu", {"hw_firmware_type": "uefi", "hw_machine_type": "q35"}))


@pytest.fixture
def project(tmp_path):
    if not GITLAB_CI_LOCAL.exists() or shutil.which("rsync") is None:
        pytest.skip("gitlab-ci-local or rsync is missing: run `make deps`")
    root = tmp_path / "catalog-project"
    (root / "manifests").mkdir(parents=True)
    for name, major, extra in CATALOG:
        image = root / "images" / f"{name}.raw"
        image.parent.mkdir(parents=True, exist_ok=True)
        write_manifest(root / "manifests", image, make_image(image, 4 * MiB, seed=name), name=f"{name}.yaml",
                       family={"os_distro_major": major}, properties={"hw_disk_bus": "virtio", **extra})
    (root / ".gitignore").write_text("images/\n")
    return root


def generate(project: Path, state: Path, cache: Path | None = None) -> Path:
    invoke = f"{PROJECT_ROOT}/.venv/bin/invoke --search-root {PROJECT_ROOT}"
    proc = subprocess.run([*invoke.split(), "ci", "--engine", "gitlab", "--catalog", "manifests", "--invoke", invoke,
                           "--setup", "echo bakery job", "--tag", "kvm", "--cache-dir", str(cache or state / "shared-cache"),
                           "--out", ".gitlab-ci.yml"],
                          cwd=project, capture_output=True, text=True, env={**_env(), "BAKERY_STATE_DIR": str(state)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return project / ".gitlab-ci.yml"


def run_pipeline(project: Path, *variables: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Commit the project as a pipeline's repository and run its scheduled pipeline under gitlab-ci-local, with
    `variables` ("NAME=value") set as CI variables."""
    subprocess.run(["git", "init", "-q", "."], cwd=project, check=True)
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.org", "commit", "-qm", "catalog"], cwd=project, check=True)
    argv = [str(GITLAB_CI_LOCAL), "--variable", "CI_PIPELINE_SOURCE=schedule", "--ignore-predefined-vars", "CI_PIPELINE_SOURCE"]
    for variable in variables:
        argv += ["--variable", variable]
    return subprocess.run(argv, cwd=project, capture_output=True, text=True, env=_env(), timeout=timeout)


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("OS_")}


def gitlab_schema() -> dict:
    """GitLab's CI JSON schema, as the pinned gitlab-ci-local ships it."""
    module = GITLAB_CI_LOCAL.resolve().parent / "schema" / "schema.js"
    out = subprocess.run(["node", "--input-type=module", "-e",
                          f"import {{schema}} from '{module}'; process.stdout.write(JSON.stringify(schema))"],
                         capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def test_the_generated_pipeline_is_valid_gitlab_ci(project, tmp_path):
    import jsonschema

    pipeline = yaml.safe_load(generate(project, tmp_path / "state").read_text())
    jsonschema.validate(pipeline, gitlab_schema())
    publishes = {name: job for name, job in pipeline.items() if name.startswith("publish:")}
    assert set(publishes) == {f"publish:{name}" for name, _, _ in CATALOG}
    assert publishes["publish:w10a-hotfix"]["resource_group"] == publishes["publish:w10a"]["resource_group"]
    assert publishes["publish:w10b"]["resource_group"] != publishes["publish:w10a"]["resource_group"]
    chained = [name for name in ("publish:w10a", "publish:w10a-hotfix") if len(publishes[name]["needs"]) == 2]
    assert len(chained) == 1  # the second of the family waits for the first (catalog order)
    other = ({"publish:w10a", "publish:w10a-hotfix"} - set(chained)).pop()
    assert {"job": other, "artifacts": False} in publishes[chained[0]]["needs"]
    assert pipeline["default"]["tags"] == ["kvm"]
    broken = {**pipeline, "bake:w10a": {**pipeline["bake:w10a"], "needs": "lint"}}  # the schema can say no
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, gitlab_schema())


def test_gitlab_ci_local_runs_the_catalog_bakes_in_parallel_and_publishes_one_family_at_a_time(project, glance_server, tmp_path):
    from pipeline.glance.connect import connect_local

    state = glance_server.root.parent
    generate(project, state)
    run = run_pipeline(project, f"BAKERY_STATE_DIR={state}", f"BAKERY_GLANCE_PORT={glance_server.port}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "json schema validated" in run.stdout + run.stderr
    # what GitLab's artifact store would carry: kilobytes per job, never an image's bytes
    stored = project / ".gitlab-ci-local" / "artifacts"
    jobs = [job for job in stored.iterdir() if job.is_dir()]
    assert len(jobs) >= 1 + 2 * len(CATALOG), [job.name for job in jobs]
    for job in jobs:
        files = [f for f in job.rglob("*") if f.is_file()]
        assert sum(f.stat().st_size for f in files) < MiB, (job.name, [(f.name, f.stat().st_size) for f in files])
        assert not [f for f in files if f.suffix in (".raw", ".qcow2")], job.name

    reports = project / "reports"
    bakes = [_interval(reports / f"bake-{name}.json") for name, _, _ in CATALOG]
    assert any(a[0] < b[1] and b[0] < a[1] for a, b in itertools.combinations(bakes, 2)), bakes  # bake jobs overlapped
    publishes = {name: json.loads((reports / f"publish-{name}.json").read_text()) for name, _, _ in CATALOG}
    assert all(report["ok"] for report in publishes.values())
    one, other = sorted((_interval(reports / "publish-w10a.json"), _interval(reports / "publish-w10a-hotfix.json")))
    assert one[1] <= other[0], (one, other)  # one family, one cloud: one after the other, never overlapping

    target = connect_local(glance_server, start=False)
    for major in {major for _, major, _ in CATALOG}:
        family = [i for i in target.glance.images.list(filters={"os_distro_major": major})]
        assert [i["id"] for i in family if i.get("recommended") == "true"] == [
            max(family, key=lambda i: (i["release_date"], i["created_at"], i["id"]))["id"]], major


def test_a_failed_release_does_not_silently_block_the_next_one_of_its_family(project, glance_server, tmp_path):
    """The older release's bake fails for real (its source is gone after generation); its publish job fails with
    one line saying so, and the newer release of the same family still publishes and is the recommended one."""
    from pipeline.glance.connect import connect_local

    for name in ("w10b", "w10u"):  # one family is enough here, its own, unseen by the other tests
        (project / "manifests" / f"{name}.yaml").unlink()
    for name in ("w10a", "w10a-hotfix"):
        manifest = project / "manifests" / f"{name}.yaml"
        manifest.write_text(manifest.read_text().replace("w10gla", "w10glf"))
    state = glance_server.root.parent
    # a cache of its own: the shared one may hold w10a's image from another test, and a cached bake needs no source
    generated = yaml.safe_load(generate(project, state, cache=tmp_path / "cache").read_text())
    assert generated["publish:w10a-hotfix"]["rules"] == [{"if": gitlab.PUBLISHING, "when": "always"}]
    (project / "images" / "w10a.raw").unlink()
    run = run_pipeline(project, f"BAKERY_STATE_DIR={state}", f"BAKERY_GLANCE_PORT={glance_server.port}")
    assert run.returncode != 0  # the pipeline is red: the failure is seen
    reports = project / "reports"
    assert json.loads((reports / "bake-w10a.json").read_text())["ok"] is False
    refused = json.loads((reports / "publish-w10a.json").read_text())  # it ran, and said why it published nothing
    assert refused["ok"] is False and "no artifact here" in refused["error"], refused
    assert (reports / "publish-w10a-hotfix.json").exists(), run.stdout[-1500:] + run.stderr[-1500:]
    hotfix = json.loads((reports / "publish-w10a-hotfix.json").read_text())
    assert hotfix["ok"], hotfix.get("error")
    family = list(connect_local(glance_server, start=False).glance.images.list(filters={"os_distro_major": "w10glf"}))
    assert [i["id"] for i in family if i.get("recommended") == "true"] == [hotfix["image"]["id"]]


def _interval(report: Path) -> tuple[dt.datetime, dt.datetime]:
    data = json.loads(report.read_text())
    return dt.datetime.fromisoformat(data["started_at"]), dt.datetime.fromisoformat(data["finished_at"])


def test_a_broken_manifest_fails_the_generation_not_the_pipeline(project, tmp_path):
    manifest = project / "manifests" / "w10b.yaml"
    manifest.write_text(manifest.read_text().replace("visibility: private", "visibility: secret"))
    proc = run_invoke("ci", "--catalog", str(project / "manifests"), "--cache-dir", str(tmp_path / "cache"), state=tmp_path / "state")
    assert proc.returncode == 1 and "w10b.yaml" in proc.stderr and not (project / ".gitlab-ci.yml").exists(), proc.stderr


# -- names a shell would read as code stay one word in every generated line ------------------------------------

RECORDER = """import json, os, sys
with open(os.environ["RECORD_TO"], "a") as out:
    out.write(json.dumps(sys.argv[1:]) + "\\n")
for i, word in enumerate(sys.argv):  # the jobs' report paths exist, as the bakery's would
    if word == "--json":
        os.makedirs(os.path.dirname(sys.argv[i + 1]) or ".", exist_ok=True)
        open(sys.argv[i + 1], "w").write("{}")
"""
HOSTILE_FILE = "rel$(touch PWNED-name);touch PWNED-semi ${IFS}x'q\"\\|&.yaml"
HOSTILE_FOLDER = "cat$(touch PWNED-folder) x"
HOSTILE_CLOUD = "x;touch PWNED-cloud"
HOSTILE_FAMILY = "w10$(touch PWNED-family)"


@pytest.fixture
def hostile_catalog(tmp_path):
    root = tmp_path / "hostile-project"
    folder = root / HOSTILE_FOLDER
    folder.mkdir(parents=True)
    image = root / "images" / "w10.raw"
    write_manifest(folder, image, make_image(image, MiB, seed="hostile"), name=HOSTILE_FILE,
                   family={"os_distro_major": HOSTILE_FAMILY}, properties={"hw_disk_bus": "virtio"})
    recorder = tmp_path / "recorder.py"
    recorder.write_text(RECORDER)
    return root, recorder


def generate_with(root: Path, state: Path, *args: str, invoke: str) -> subprocess.CompletedProcess:
    runner = f"{PROJECT_ROOT}/.venv/bin/invoke --search-root {PROJECT_ROOT}"
    return subprocess.run([*runner.split(), "ci", "--catalog", HOSTILE_FOLDER, "--invoke", invoke, "--setup", "true",
                           "--cache-dir", str(state / "shared-cache"), "--out", ".gitlab-ci.yml", *args], cwd=root, capture_output=True, text=True,
                          env={**_env(), "BAKERY_STATE_DIR": str(state)}, timeout=120)


def test_hostile_names_stay_single_words_in_bash(hostile_catalog, tmp_path):
    root, recorder = hostile_catalog
    proc = generate_with(root, tmp_path / "state", "--cloud", HOSTILE_CLOUD, invoke=f"python3 {recorder}")
    assert proc.returncode == 0, proc.stderr
    pipeline = yaml.safe_load((root / ".gitlab-ci.yml").read_text())
    record = tmp_path / "argv.jsonl"
    for name, job in pipeline.items():
        for line in job.get("script", []) if isinstance(job, dict) else []:
            subprocess.run(["bash", "-c", line], cwd=root, check=True, env={**_env(), "RECORD_TO": str(record)}, timeout=60)
    assert not list(root.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    manifest = f"{HOSTILE_FOLDER}/{HOSTILE_FILE}"
    assert ["lint", "--manifest", manifest] == calls[0][:3]
    assert ["bake", "--manifest", manifest] == calls[1][:3]
    assert calls[2][:4] == ["publish", "--artifact", calls[2][2], "--cloud"] and calls[2][4] == HOSTILE_CLOUD
    (group,) = {job["resource_group"] for name, job in pipeline.items() if name.startswith("publish:")}
    assert "$" not in group and "(" not in group and ";" not in group, group


def test_hostile_names_stay_single_words_under_gitlab_ci_local(hostile_catalog, tmp_path):
    if not GITLAB_CI_LOCAL.exists() or shutil.which("rsync") is None:
        pytest.skip("gitlab-ci-local or rsync is missing: run `make deps`")
    root, recorder = hostile_catalog
    record = tmp_path / "argv.jsonl"
    assert generate_with(root, tmp_path / "state", "--cloud", HOSTILE_CLOUD, invoke=f"python3 {recorder}").returncode == 0
    run = run_pipeline(root, f"RECORD_TO={record}", timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert not list(root.rglob("PWNED*")), list(root.rglob("PWNED*"))
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert {tuple(call[:3]) for call in calls if call[0] != "publish"} == {
        ("lint", "--manifest", f"{HOSTILE_FOLDER}/{HOSTILE_FILE}"), ("bake", "--manifest", f"{HOSTILE_FOLDER}/{HOSTILE_FILE}")}
    assert [call[4] for call in calls if call[0] == "publish"] == [HOSTILE_CLOUD]


@pytest.mark.parametrize("name, expect", [("a\nb.yaml", "U+000A"), ("a\x1bb.yaml", "U+001B"), ("-rf.yaml", "starts with -"),
                                          ("a\u202eb.yaml", "U+202E"), ("a`touch PWNED`.yaml", "backtick")],
                         ids=["newline", "escape", "leading-dash", "rlo", "backtick"])
def test_names_a_runner_treats_specially_are_refused_at_generation(tmp_path, name, expect):
    folder = tmp_path / "catalog"
    folder.mkdir()
    image = tmp_path / "images" / "w10.raw"
    write_manifest(folder, image, make_image(image, MiB, seed="special"), name=name)
    proc = run_invoke("ci", "--catalog", str(folder), "--cache-dir", str(tmp_path / "cache"), state=tmp_path / "state")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert expect in proc.stderr and "catalog" in proc.stderr


@pytest.mark.parametrize("args, expect", [(("--cloud", "a\nb"), "--cloud"), (("--tag", "k\nvm"), "--tag"),
                                          (("--setup", "make deps\ncurl evil"), "--setup"), (("--cloud", "x`id`"), "--cloud"),
                                          (("--set", "label=a`id`"), "--set")], ids=["cloud", "tag", "setup", "cloud-backtick", "set-backtick"])
def test_options_with_line_breaks_are_refused_at_generation(tmp_path, args, expect):
    folder = tmp_path / "catalog"
    folder.mkdir()
    image = tmp_path / "images" / "w10.raw"
    write_manifest(folder, image, make_image(image, MiB, seed="options"), name="w10.yaml")
    proc = run_invoke("ci", "--catalog", str(folder), "--cache-dir", str(tmp_path / "cache"), *args, state=tmp_path / "state")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and expect in proc.stderr, proc.stderr


def test_the_shipped_catalog_generates_and_says_what_it_skipped(tmp_path):
    proc = run_invoke("ci", "--catalog", str(PROJECT_ROOT / "manifests"), "--cache-dir", "/srv/bakery-cache", "--kvm-tag", "kvm",
                      "--max-job-minutes", "360", "--json", str(tmp_path / "ci.json"), state=tmp_path / "state")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "ci.json").read_text())["details"]["ci"]
    assert [Path(s["manifest"]).name for s in report["skipped"]] == ["demo-w10entx64.yaml"]
    assert "base_image" in report["skipped"][0]["reason"] and "demo-w10entx64.yaml: skipped" in proc.stderr
    assert "bake:w10entx64" in report["jobs"] and "bake:demo-w10entx64" not in report["jobs"]


def test_a_manifest_that_fails_lint_fails_the_generation_with_a_line_naming_it(project, tmp_path):
    manifest = project / "manifests" / "w10b.yaml"
    manifest.write_text(manifest.read_text().replace("os_distro_major: w10glb", "os_distro_major: w11glb")
                        .replace("version: '10'", "version: '11'"))
    proc = run_invoke("ci", "--catalog", str(project / "manifests"), "--cache-dir", str(tmp_path / "cache"), "--out",
                      str(project / ".gitlab-ci.yml"), state=tmp_path / "state")
    assert proc.returncode == 1 and not (project / ".gitlab-ci.yml").exists(), proc.stderr
    assert any("w10b.yaml" in line and "windows11-requirements" in line for line in proc.stderr.splitlines()), proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: 1 of 4 manifests fail lint (w10b.yaml)")


def test_within_a_family_releases_publish_in_release_order_base_name_first(project, tmp_path):
    pipeline = yaml.safe_load(generate(project, tmp_path / "state").read_text())
    assert {"job": "publish:w10a", "artifacts": False} in pipeline["publish:w10a-hotfix"]["needs"]
    assert all(need["job"] != "publish:w10a-hotfix" for need in pipeline["publish:w10a"]["needs"])


def canary_catalog(tmp_path: Path, canary: dict) -> Path:
    folder = tmp_path / "catalog"
    folder.mkdir()
    image = tmp_path / "images" / "w10.raw"
    write_manifest(folder, image, make_image(image, MiB, seed="runner"), name="w10.yaml", properties={"hw_disk_bus": "sata"})
    write_manifest(folder, image, make_image(image, MiB, seed="runner"), name="w10c.yaml", family={"os_distro_major": "w10c"},
                   properties={"hw_disk_bus": "sata"}, canary={"ready": "serial-marker", **canary})
    return folder


def test_jobs_carry_the_runner_contract(tmp_path):
    folder = canary_catalog(tmp_path, {"timeout_minutes": 10})
    report = tmp_path / "ci.json"
    proc = run_invoke("ci", "--catalog", str(folder), "--cache-dir", "/srv/cache", "--tag", "bakery", "--fuse-tag", "fuse", "--kvm-tag",
                      "kvm", "--json", str(report), state=tmp_path / "state")
    assert proc.returncode == 0, proc.stderr
    pipeline = yaml.safe_load(json.loads(report.read_text())["details"]["ci"]["text"])
    assert pipeline["bake:w10c"]["tags"] == ["bakery", "fuse", "kvm"] and pipeline["bake:w10"]["tags"] == ["bakery", "fuse"]
    assert pipeline["bake:w10c"]["timeout"] == "40 minutes" and pipeline["bake:w10"]["timeout"] == "30 minutes"
    assert pipeline["default"]["retry"]["when"] and "script_failure" not in pipeline["default"]["retry"]["when"]
    assert pipeline["bake:w10"]["interruptible"] is True and "interruptible" not in pipeline["publish:w10"]
    assert "--handoff" in pipeline["bake:w10"]["script"][-1] and pipeline["variables"]["BAKERY_CACHE_DIR"] == "/srv/cache"
    assert any("BAKERY_CLOUDS_YAML" in line for line in pipeline["publish:w10"]["script"])


@pytest.mark.parametrize("canary, kvm, ok", [({"timeout_minutes": 15}, False, False), ({"timeout_minutes": 15}, True, True),
                                             ({"timeout_minutes": 1, "tcg_timeout_factor": 5}, False, True)],
                         ids=["tcg-too-long", "kvm", "tcg-fits"])
def test_a_vm_job_no_runner_could_finish_is_refused_at_generation(tmp_path, canary, kvm, ok):
    folder = canary_catalog(tmp_path, canary)
    proc = run_invoke("ci", "--catalog", str(folder), "--cache-dir", "/srv/cache", *(("--kvm-tag", "kvm") if kvm else ()),
                      state=tmp_path / "state")
    assert (proc.returncode == 0) == ok, proc.stderr
    if not ok:
        assert "w10c.yaml" in proc.stderr and "under TCG" in proc.stderr and "--max-job-minutes 60" in proc.stderr


def test_the_cache_dir_is_required(tmp_path):
    folder = canary_catalog(tmp_path, {})
    proc = run_invoke("ci", "--catalog", str(folder), state=tmp_path / "state")
    assert proc.returncode == 1 and "--cache-dir: required" in proc.stderr.strip().splitlines()[-1], proc.stderr
