"""The audit's SCS-0102 verdicts equal the standard's own checker's, case by case (tests/scs_cases.py, with the
checker's verdicts recorded in tests/data/scs_checker_verdicts.json), and what is refused before publishing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from pipeline.properties import scs
from tests.scs_cases import CASES, NOW

CHECKER = json.loads((Path(__file__).parent / "data" / "scs_checker_verdicts.json").read_text())


def normalized(check: str) -> str:
    return check.replace("_", "-")


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_audit_fails_exactly_the_checks_the_checker_fails(case):
    now = dt.datetime.strptime(NOW, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    findings = scs.check_catalog(CASES[case], now)
    failing = sorted({normalized(f.check) for f in findings if f.level == "error"})
    assert failing == sorted(normalized(c) for c in CHECKER["verdicts"][case]), [f.to_dict() for f in findings]


def test_the_table_covers_every_case_and_the_checks_that_matter():
    assert set(CHECKER["verdicts"]) == set(CASES)
    failed = {normalized(c) for checks in CHECKER["verdicts"].values() for c in checks}
    assert {"scs-0102-image-recency", "scs-0102-os-purpose-uniqueness", "scs-0102-prop-hw-disk-bus"} <= failed


@pytest.mark.parametrize("image, judged", [({"visibility": "public"}, True), ({"visibility": "community"}, True),
                                           ({"visibility": "private"}, False), ({"visibility": "shared"}, False),
                                           ({"visibility": "public", "os_hidden": True}, False),
                                           ({"visibility": "public", "status": "deactivated"}, False)])
def test_the_audit_judges_what_the_checker_lists(image, judged):
    assert scs.in_scope(image) is judged
