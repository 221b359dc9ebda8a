"""The README's main job, `make demo` (`invoke demo`), run as a new user runs it: the embedded default, a local
Glance started for it, a generated SYNTHETIC base image, two monthly releases, the first one demoted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.glance.connect import connect_local
from pipeline.glance.local import LocalGlance
from tests.conftest import free_port, run_invoke


@pytest.mark.slow
def test_the_main_job_publishes_two_months_with_the_first_demoted(tmp_path):
    state = tmp_path / "state"
    env = {"BAKERY_GLANCE_PORT": str(free_port())}
    try:
        proc = run_invoke("demo", "--json", str(tmp_path / "demo.json"), state=state, env=env, timeout=2400)
        assert proc.returncode == 0, proc.stderr[-4000:]
        report = json.loads((tmp_path / "demo.json").read_text())
        assert report["ok"] is True and report["error"] is None

        older, newer = sorted(report["details"]["family"], key=lambda member: member["release_date"])
        assert newer["id"] == report["image"]["id"] and [d["id"] for d in report["demoted"]] == [older["id"]]
        assert (older["recommended"], newer["recommended"]) == ("false", "true")

        glance = connect_local(LocalGlance(state / "glance", int(env["BAKERY_GLANCE_PORT"])), start=False)
        stored = glance.glance.images.get(newer["id"])
        assert stored["os_type"] == "windows" and stored["status"] == "active"
        assert stored["checksum"] == report["image"]["checksum"] and stored["os_hash_value"] == report["image"]["os_hash_value"]
        assert "synthetic-demo" in stored["tags"]

        notes = report["details"]["release_notes"]
        assert (Path(notes["folder"]) / "notes.html").is_file() and Path(notes["family_page"]).is_file()
        assert "the family now:" in proc.stderr and "release notes:" in proc.stderr
    finally:
        run_invoke("glance-down", state=state, env=env)
