"""explain for the Nova releases a cloud may still run, against the domain XML their real libvirt drivers
generated (recorded by tests/record_nova_domains.py from nova 27.5.1 to 34.0.0, every series explain models
from 2023.1 on, each installed with its own release's upper-constraints): every property set, element by element on what the properties decide."""

from __future__ import annotations

import pytest

from pipeline.properties.explain import explain
from tests.nova_cases import CASES, decided
from tests.record_nova_domains import RECORDED

RELEASES = sorted((p.name for p in RECORDED.iterdir() if p.is_dir()), key=lambda v: tuple(int(x) for x in v.split(".")))


def test_every_release_a_cloud_may_run_is_recorded():
    assert RELEASES == ["27.5.1", "28.3.1", "29.4.0", "30.3.0", "31.3.1", "32.2.1", "33.0.2", "34.0.0"]
    for release in RELEASES:
        assert sorted(p.stem for p in (RECORDED / release).glob("*.xml")) == sorted(CASES), release


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("case", CASES)
def test_explain_shows_what_that_releases_driver_generated(release, case):
    properties = CASES[case]
    xml = (RECORDED / release / f"{case}.xml").read_text()
    assert f'<nova:package version="{release}"/>' in xml  # the release that generated it, not another
    real, shown = decided(xml), decided(explain(properties, nova=release).xml)
    if "hw_machine_type" not in properties:
        real.pop("machine"), shown.pop("machine")  # the host's default machine type, not the image's
    assert shown == real


@pytest.mark.parametrize("release, series", [("27.5.1", "2023.1"), ("28.3.1", "2023.2"), ("29.4.0", "2024.1"), ("30.3.0", "2024.2"),
                                             ("31.3.1", "2025.1"), ("32.2.1", "2025.2"), ("33.0.2", "2026.1"), ("34.0.0", "2026.2")])
def test_a_series_means_its_newest_point_release(release, series):
    for case, properties in CASES.items():
        assert explain(properties, nova=series).xml == explain(properties, nova=release).xml, case


def test_the_recording_tells_releases_apart():
    """The comparison can fail: the newest model is wrong for the oldest recorded driver somewhere."""
    def without_machine(xml: str) -> dict:
        return {k: v for k, v in decided(xml).items() if k != "machine"}

    differ = [case for case, properties in CASES.items()
              if without_machine(explain(properties, nova="2026.2").xml) != without_machine((RECORDED / "27.5.1" / f"{case}.xml").read_text())]
    assert differ


@pytest.mark.slow
def test_the_generator_still_records_what_is_committed(tmp_path):
    """The recorder run for real on the Nova this venv holds (34.0.0, the test extra's): what it writes decides
    the same as the committed data, so the data can be regenerated."""
    import sys
    from importlib import util

    from tests.record_nova_domains import record

    if not util.find_spec("nova"):
        pytest.skip("nova is not installed (pip install -e '.[test]')")
    from importlib.metadata import version

    installed = version("nova")
    if not (RECORDED / installed).is_dir():
        pytest.skip(f"nova {installed} is installed, and has no recorded data to compare with")
    assert record(installed, sys.executable, tmp_path) == 0
    for case in CASES:
        assert decided((tmp_path / f"{case}.xml").read_text()) == decided((RECORDED / installed / f"{case}.xml").read_text()), case
