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


def generate(project: Path, state: Path) -> Path:
    invoke = f"{PROJECT_ROOT}/.venv/bin/invoke --search-root {PROJECT_ROOT}"
    proc = subprocess.run([*invoke.split(), "ci", "--engine", "gitlab", "--catalog", "manifests", "--invoke", invoke,
                           "--setup", "echo bakery job", "--tag", "kvm", "--out", ".gitlab-ci.yml"],
                          cwd=project, capture_output=True, text=True, env={**_env(), "BAKERY_STATE_DIR": str(state)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return project / ".gitlab-ci.yml"


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
    subprocess.run(["git", "init", "-q", "."], cwd=project, check=True)
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.org", "commit", "-qm", "catalog"], cwd=project, check=True)
    run = subprocess.run([str(GITLAB_CI_LOCAL), "--variable", "CI_PIPELINE_SOURCE=schedule", "--ignore-predefined-vars", "CI_PIPELINE_SOURCE",
                          "--variable", f"BAKERY_STATE_DIR={state}", "--variable", f"BAKERY_GLANCE_PORT={glance_server.port}"],
                         cwd=project, capture_output=True, text=True, env=_env(), timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "json schema validated" in run.stdout + run.stderr

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


def _interval(report: Path) -> tuple[dt.datetime, dt.datetime]:
    data = json.loads(report.read_text())
    return dt.datetime.fromisoformat(data["started_at"]), dt.datetime.fromisoformat(data["finished_at"])


def test_a_broken_manifest_fails_the_generation_not_the_pipeline(project, tmp_path):
    manifest = project / "manifests" / "w10b.yaml"
    manifest.write_text(manifest.read_text().replace("visibility: private", "visibility: secret"))
    proc = run_invoke("ci", "--catalog", str(project / "manifests"), state=tmp_path / "state")
    assert proc.returncode == 1 and "w10b.yaml" in proc.stderr and not (project / ".gitlab-ci.yml").exists(), proc.stderr
