"""The rendered property set, and the lint rules that stop a publish."""

from __future__ import annotations

import pytest

from pipeline.build.image import BuiltImage
from pipeline.common.errors import LintFailed, ManifestError
from pipeline.diskimage.info import ImageInfo
from pipeline.manifest import load_manifest
from pipeline.properties import lint
from pipeline.properties.render import render
from tests.conftest import write_manifest

PIN = "cd" * 32
GiB = 1024**3
SEED_FINDINGS = {"os_distro": "Windows", "os_distro_major": "w10entx64", "os_edition": "DESKTOP", "os": "WINDOWS",
                 "os_version": "UNKNOWN", "release_date": "2020-03-02", "recommended": "true", "upstream_provider": "x"}


def built(virtual_size=40 * GiB) -> BuiltImage:
    return BuiltImage(path=None, info=ImageInfo("raw", virtual_size), source_path=None, source_sha256=PIN, temporary=False)


def rendered(tmp_path, virtual_size=40 * GiB, **overrides):
    manifest = load_manifest(write_manifest(tmp_path, tmp_path / "x.raw", PIN, **overrides), release_date="2026-11-01")
    return manifest, render(manifest, built(virtual_size), build_id="b" * 64)


def test_seed_property_set_rendered_as_strings(tmp_path):
    manifest, props = rendered(tmp_path)
    p = props.properties
    assert p["os_type"] == "windows" and p["os_distro"] == "windows" and p["os"] == "WINDOWS"
    assert p["os_distro_major"] == "w10entx64" and p["os_edition"] == "DESKTOP" and p["os_version"] == "10"
    assert p["release_date"] == "2026-11-01" and p["recommended"] == "true"
    assert p["architecture"] == "x86_64" and p["hypervisor_type"] == "qemu"
    assert p["bakery_build_id"] == "b" * 64 and p["bakery_source_sha256"] == PIN
    assert p["bakery_manifest_sha256"] == manifest.sha256
    assert p["hw_disk_bus"] == "virtio"
    assert all(isinstance(v, str) for v in p.values())
    assert props.core == {"disk_format": "raw", "container_format": "bare", "min_disk": 40, "min_ram": 2048}


def test_min_disk_is_the_larger_of_manifest_and_virtual_size(tmp_path):
    _, props = rendered(tmp_path, virtual_size=40 * GiB + 1)
    assert props.core["min_disk"] == 41
    _, props = rendered(tmp_path, image={"min_disk": 60})
    assert props.core["min_disk"] == 60


def test_os_type_with_capital_w_is_refused(tmp_path):
    with pytest.raises(LintFailed) as caught:
        rendered(tmp_path, os={"type": "Windows", "version": "10"})
    assert caught.value.findings[0].rule == "os-type-windows"
    assert "nothing was published" in caught.value.one_line()


def test_the_seed_set_is_flagged():
    findings = lint.lint(SEED_FINDINGS)
    assert [f.rule for f in lint.errors(findings)] == ["os-type-windows"]
    assert "missing" in findings[0].message


@pytest.mark.parametrize("distro", ["windows", "Windows", "WINDOWS", "win10", "win2k19"])
def test_any_windows_spelling_needs_os_type(distro):
    assert lint.errors(lint.lint({"os_distro": distro, "release_date": "2026-11-01"}))
    assert not lint.errors(lint.lint({"os_distro": distro, "os_type": "windows", "release_date": "2026-11-01"}))


def test_linux_images_need_no_os_type():
    assert not lint.errors(lint.lint({"os_distro": "ubuntu", "release_date": "2026-11-01"}))


def test_enum_values_come_from_glance_metadefs(tmp_path):
    with pytest.raises(LintFailed) as caught:
        rendered(tmp_path, properties={"hw_disk_bus": "virtio-blk"})
    finding = caught.value.findings[0]
    assert finding.rule == "enum-value" and finding.property == "hw_disk_bus"
    assert "virtio" in finding.message and "OS::Compute::LibvirtImage" in finding.message
    assert not lint.errors(lint.lint({"hw_tpm_version": "2.0", "hw_tpm_model": "tpm-crb", "release_date": "2026-11-01"}))
    assert lint.errors(lint.lint({"hw_tpm_version": "2", "release_date": "2026-11-01"}))


def test_non_string_override_is_refused(tmp_path):
    with pytest.raises(LintFailed) as caught:
        rendered(tmp_path, properties={"hw_vif_multiqueue_enabled": True})
    assert caught.value.findings[0].rule == "value-not-string"
    assert "'true'" in caught.value.findings[0].message


def test_bad_release_date_is_flagged():
    assert lint.errors(lint.lint({"release_date": "March 2026"}))


@pytest.mark.parametrize("key", ["bakery_build_id", "recommended", "superseded_by", "os_glance_import"])
def test_pipeline_owned_properties_cannot_be_overridden(tmp_path, key):
    with pytest.raises(ManifestError) as caught:
        rendered(tmp_path, properties={key: "x"})
    assert f"properties.{key}" in str(caught.value)


def test_core_fields_are_not_properties(tmp_path):
    with pytest.raises(ManifestError, match="set it under image"):
        rendered(tmp_path, properties={"visibility": "public"})
