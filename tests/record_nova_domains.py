"""Record the domain XML a real Nova release's libvirt driver generates for every property set of
tests/test_explain_real_nova.py, into tests/data/nova-domains/<nova version>/<case>.xml, where
tests/test_explain_recorded_nova.py compares explain with it.

Run it with the Python of a venv that holds that Nova release and its test requirements, installed with the
release's own upper-constraints (openstack/requirements, its stable/ or unmaintained/ branch, or the
<series>-eol tag once the branch is gone):

    python3 -m venv /tmp/nova-29.4.0
    /tmp/nova-29.4.0/bin/pip install -c upper-constraints.txt nova==29.4.0 oslotest ddt testscenarios requests-mock wsgi-intercept
    .venv/bin/python -m tests.record_nova_domains 29.4.0 /tmp/nova-29.4.0/bin/python
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipeline.common.paths import PROJECT_ROOT

RECORDED = PROJECT_ROOT / "tests" / "data" / "nova-domains"


def record(version: str, python: str, out: Path | None = None) -> int:
    from tests.nova_cases import CASES

    reported = subprocess.run([python, "-c", "import nova.version; print(nova.version.version_string())"], capture_output=True,
                              text=True, timeout=120).stdout.strip()
    if reported != version:
        print(f"{python} runs nova {reported or '(none)'}, not {version}", file=sys.stderr)
        return 1
    out = out or RECORDED / version
    out.mkdir(parents=True, exist_ok=True)
    for name, properties in CASES.items():
        proc = subprocess.run([python, "-m", "tests.nova_libvirt", json.dumps(properties)], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=300)
        if "<domain" not in proc.stdout:
            print(f"{name}: nova {version} rendered no domain: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return 1
        (out / f"{name}.xml").write_text(proc.stdout[proc.stdout.index("<domain"):])
        print(f"{version} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(record(sys.argv[1], sys.argv[2], Path(sys.argv[3]) if len(sys.argv) > 3 else None))
