"""explain against the real thing: the domain XML nova 34's libvirt driver generates (tests/nova_libvirt.py) for
the same image properties, compared element by element on what the properties decide."""

from __future__ import annotations

import importlib.util

import pytest

from pipeline.properties.explain import explain

# Looked up, never imported here: importing nova monkey-patches this process with eventlet (its default
# concurrency mode), which hangs the in-process servers of other tests. The renderer imports it in a child.
if not all(importlib.util.find_spec(name) for name in ("nova", "oslotest", "ddt", "testscenarios", "requests_mock", "wsgi_intercept")):
    pytest.skip("nova and its test requirements are not installed (pip install -e '.[test]')", allow_module_level=True)

from tests.nova_cases import CASES, decided


@pytest.mark.parametrize("properties", CASES.values(), ids=CASES.keys())
def test_explain_shows_what_the_real_driver_generates(properties):
    from tests.nova_libvirt import render

    real = decided(render(properties))
    shown = decided(explain(properties, nova="2026.2").xml)
    if real["machine"] is None or "hw_machine_type" not in properties:
        real.pop("machine"), shown.pop("machine")  # the host's default machine type, not the image's
    assert shown == real


def test_os_type_is_what_turns_the_enlightenments_on_in_the_real_driver():
    from tests.nova_libvirt import render

    windows, distro_only = decided(render(CASES["windows-bios"])), decided(render(CASES["os-distro-only"]))
    assert windows["hyperv"] and windows["clock"] == "localtime" and windows["timers"].get("hypervclock") == "yes"
    assert distro_only["hyperv"] == [] and distro_only["clock"] == "utc" and "hypervclock" not in distro_only["timers"]
