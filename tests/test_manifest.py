"""Manifest rendering and validation: good manifests load, bad ones fail with one precise line."""

from __future__ import annotations

import pytest

from pipeline.common.errors import ManifestError
from pipeline.common.paths import MANIFESTS
from pipeline.manifest import load_manifest, parse_release_date, parse_variables
from tests.conftest import write_manifest

PIN = "ab" * 32


def load(path, **kwargs):
    return load_manifest(path, release_date="2026-11-01", **kwargs)


def error_of(path, **kwargs) -> ManifestError:
    with pytest.raises(ManifestError) as caught:
        load(path, **kwargs)
    message = caught.value.one_line()
    assert "\n" not in message
    return caught.value


@pytest.mark.parametrize("name", ["w10entx64.yaml", "ws2022std.yaml"])
def test_example_manifests_render_and_validate(name):
    manifest = load(MANIFESTS / name)
    assert manifest.family["os_distro"] == "windows"
    assert manifest.os["type"] == "windows"
    assert "2026-11-01" in manifest.name
    assert len(manifest.source.sha256) == 64


def test_demo_manifest_takes_its_pin_from_variables(tmp_path):
    other = "b" * 64
    manifest = load(MANIFESTS / "demo-w10entx64.yaml", variables={
        "base_image": str(tmp_path / "x.qcow2"), "base_sha256": PIN, "virtio_win_iso": str(tmp_path / "v.iso"), "virtio_win_sha256": other})
    assert manifest.source.location == str(tmp_path / "x.qcow2")
    assert manifest.source.sha256 == PIN
    assert manifest.bake.virtio_win.location == str(tmp_path / "v.iso")  # the include pinned a real ISO; the demo overrides it
    assert manifest.bake.virtio_win.sha256 == other and manifest.bake.virtio_win.field == "bake.virtio_win"
    assert "viostor" in manifest.bake.drivers  # the default driver set
    assert manifest.family["os_distro_major"] == "w10entx64"  # inherited from the included family


def test_include_is_overridden_by_the_including_manifest(tmp_path):
    (tmp_path / "base.yaml").write_text("image:\n  min_ram: 1024\n  visibility: community\nupstream_provider: base\n")
    path = write_manifest(tmp_path, tmp_path / "x.raw", PIN, include="base.yaml", image={"min_ram": 4096})
    manifest = load(path)
    assert manifest.min_ram == 4096
    assert manifest.visibility == "private"
    assert manifest.upstream_provider == "base"


def test_the_same_inputs_render_the_same_manifest_hash(tmp_path):
    path = write_manifest(tmp_path, tmp_path / "x.raw", PIN)
    assert load(path).sha256 == load(path).sha256
    assert load_manifest(path, release_date="2026-12-01").sha256 != load(path).sha256


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nfamily:\n  os_distro: [unclosed\n")
    error = error_of(path)
    assert error.file == str(path)
    assert error.line in (3, 4)
    assert "invalid YAML" in str(error)


def test_undefined_variable_names_it_and_the_line(tmp_path):
    path = write_manifest(tmp_path, tmp_path / "x.raw", PIN)
    path.write_text(path.read_text().replace("Apps", "Apps {{ edition_label }}"))
    error = error_of(path)
    assert "edition_label" in str(error)
    assert error.line == 1
    assert "--set" in str(error)


def test_environment_is_not_part_of_the_render_context(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME_SECRET", "x")
    path = write_manifest(tmp_path, tmp_path / "x.raw", PIN)
    path.write_text(path.read_text().replace("Apps", "Apps {{ HOME_SECRET }}"))
    assert "HOME_SECRET" in str(error_of(path))


def test_sandbox_refuses_attribute_escapes(tmp_path):
    path = write_manifest(tmp_path, tmp_path / "x.raw", PIN)
    path.write_text(path.read_text().replace("Apps", "Apps {{ ''.__class__.__mro__[1].__subclasses__() }}"))
    error = error_of(path)
    assert "template error" in str(error) or "undefined" in str(error)


def test_wrong_type_says_what_was_expected(tmp_path):
    path = write_manifest(tmp_path, tmp_path / "x.raw", PIN, os={"type": "windows", "version": 10})
    error = error_of(path)
    assert error.field == "os.version"
    assert "expected a string" in str(error) and "quote it" in str(error)
    assert error.line is not None


def test_missing_sha256_pin_is_refused(tmp_path):
    path = write_manifest(tmp_path, tmp_path / "x.raw", PIN)
    path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("  sha256:")) + "\n")
    error = error_of(path)
    assert error.field == "source.sha256"
    assert "pin" in str(error)


def test_malformed_pin_is_refused(tmp_path):
    error = error_of(write_manifest(tmp_path, tmp_path / "x.raw", "1234"))
    assert error.field == "source.sha256" and "64 hex digits" in str(error)


def test_unknown_top_level_field_is_refused(tmp_path):
    error = error_of(write_manifest(tmp_path, tmp_path / "x.raw", PIN, colour="blue"))
    assert error.field == "colour"


def test_family_keys_must_be_family_properties(tmp_path):
    error = error_of(write_manifest(tmp_path, tmp_path / "x.raw", PIN, release={"family_properties": ["os_distro", "os_flavour"]}))
    assert error.field == "release.family_properties.1"


def test_missing_family_property(tmp_path):
    path = write_manifest(tmp_path, tmp_path / "x.raw", PIN, family={"os_distro": "windows"})
    path.write_text(path.read_text().replace("  os_edition: DESKTOP\n", ""))
    assert error_of(path).field == "family.os_edition"


def test_bad_visibility_lists_choices(tmp_path):
    error = error_of(write_manifest(tmp_path, tmp_path / "x.raw", PIN, image={"visibility": "everyone"}))
    assert "public, community, shared, private" in str(error)


def test_missing_manifest_file(tmp_path):
    error = error_of(tmp_path / "nope.yaml")
    assert "no such manifest" in str(error)


@pytest.mark.parametrize("value", ["2026-13-01", "01/11/2026", "2026-1-1"])
def test_release_date_must_be_iso(value):
    with pytest.raises(ManifestError):
        parse_release_date(value)


def test_set_variables():
    assert parse_variables(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    for bad in (["novalue"], ["1x=2"], ["release_date=2026-01-01"]):
        with pytest.raises(ManifestError):
            parse_variables(bad)
