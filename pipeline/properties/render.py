"""The Glance property set of a release, rendered from templates/properties.yaml.j2, then linted.

The template maps manifest and image facts to property names; the manifest's `properties:` section then
overrides or extends it. Glance core attributes (min_disk, disk_format, ...) ride along in the same
mapping and are split off when the image is created.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pipeline import __version__
from pipeline.build.image import BuiltImage
from pipeline.common.errors import BakeryError, LintFailed, ManifestError
from pipeline.common.paths import TEMPLATES, project_relative
from pipeline.manifest import Manifest
from pipeline.properties import lint

TEMPLATE = TEMPLATES / "properties.yaml.j2"
# Set by the pipeline itself; a manifest may not override them.
RESERVED = ("bakery_", "os_glance_", "superseded_by", "supersedes", "recommended")
CORE_ATTRIBUTES = {"min_disk": int, "min_ram": int, "disk_format": str, "container_format": str}
# Glance core fields that are not properties at all: they belong in the manifest's image: section.
NOT_PROPERTIES = ("name", "visibility", "tags", "os_hidden", "protected", "id", "status", "owner",
                  "checksum", "os_hash_algo", "os_hash_value", "size", "virtual_size")


@dataclass(frozen=True)
class PropertySet:
    properties: dict[str, str]  # custom properties, all strings
    core: dict[str, int | str]  # min_disk, min_ram, disk_format, container_format
    findings: tuple[lint.Finding, ...]

    def all(self) -> dict[str, str]:
        return {**{k: str(v) for k, v in self.core.items()}, **self.properties}


def template_sha256(template: Path = TEMPLATE) -> str:
    return hashlib.sha256(template.read_bytes()).hexdigest()


def render(manifest: Manifest, image: BuiltImage, *, build_id: str, template: Path = TEMPLATE, enforce: bool = True,
           provenance: dict | None = None) -> PropertySet:
    """Render, merge overrides, lint; raises LintFailed on any error finding unless enforce is False.

    provenance: lock_sha256, manifest_commit, build_stage (what the job knows beyond the manifest)."""
    check_suppressions(manifest)
    context = _context(manifest, image, build_id)
    context["provenance"].update({"lock_sha256": None, "manifest_commit": None, "build_stage": None, **(provenance or {})})
    rendered = _render_template(template, context)
    _check_overrides(manifest)
    merged = {**rendered, **manifest.properties}
    facts = image.facts.lint_facts() if image.facts else {}
    if image.info:
        facts["virtual_size"] = image.info.virtual_size
    findings = tuple(lint.lint(merged, facts=facts, suppress=manifest.lint_suppress))
    if enforce and lint.errors(list(findings)):
        raise lint_failed(manifest, findings)
    core = {key: CORE_ATTRIBUTES[key](merged.pop(key)) for key in list(merged) if key in CORE_ATTRIBUTES}
    return PropertySet(properties=merged, core=core, findings=findings)


# Where the template takes a property from, for an error that names the field as the manifest writes it.
TEMPLATE_SOURCES = {"os": ("os", "name"), "os_type": ("os", "type"), "os_version": ("os", "version"), "min_disk": ("image", "min_disk"),
                    "min_ram": ("image", "min_ram"), "upstream_provider": ("upstream_provider",)}


def lint_failed(manifest: Manifest, findings, *, file: str | None = None) -> LintFailed:
    """LintFailed naming the manifest's file, line and field behind the first error (properties.os_type when
    the manifest sets it there, os.type when the template took it from os:). file: what to call the manifest
    when it is not a file of its own (an artifact's record)."""
    first = lint.errors(list(findings))[0]
    prop = first.property
    keys = ("properties", prop) if prop in manifest.properties else ("family", prop) if prop in manifest.family else TEMPLATE_SOURCES.get(prop)
    if keys is None:
        return LintFailed(findings, where=file or str(manifest.path))
    located = manifest.error(keys, "")
    where = file or f"{located.file}{f':{located.line}' if located.line else ''}"
    return LintFailed(findings, where=f"{where}: {located.field}")


def check_suppressions(manifest: Manifest) -> None:
    """A manifest may only suppress rules that exist (the manifest package cannot know them)."""
    for rule_id in manifest.lint_suppress:
        if rule_id not in lint.RULES:
            raise manifest.error(("lint", "suppress", rule_id), f"unknown rule; expected one of {', '.join(lint.RULES)}")


def _context(manifest: Manifest, image: BuiltImage, build_id: str) -> dict:
    return {
        "release_date": manifest.release_date,
        "family": manifest.family,
        "os": manifest.os,
        "upstream_provider": manifest.upstream_provider,
        "image": {
            "virtual_size": image.info.virtual_size if image.info else None,
            "min_disk": max(manifest.min_disk or 0, _disk_gib(manifest, image)),
            "min_ram": manifest.min_ram,
        },
        "facts": image.facts.to_dict() if image.facts else None,
        "virtio_win_version": image.virtio_win_version,
        "install": manifest.install.to_dict() if manifest.install else None,
        # the release date is the patch cutoff, which is what SCS-0102 asks image_build_date to be
        "scs": manifest.scs.properties(build_date=manifest.release_date) if manifest.scs else None,
        "provenance": {
            "build_id": build_id,
            "manifest": project_relative(manifest.path),
            "manifest_sha256": manifest.sha256,
            "source_sha256": image.source_sha256,
            "pipeline_version": __version__,
        },
    }


def _disk_gib(manifest: Manifest, image: BuiltImage) -> int:
    if image.info:
        return image.info.min_disk_gib
    return manifest.install.disk_size_gib if manifest.install else 0  # the disk Setup will be given


def _render_template(template: Path, context: dict) -> dict:
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(template.parent)), undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    try:
        text = env.get_template(template.name).render(context)
        data = yaml.safe_load(text)
    except (jinja2.TemplateError, yaml.YAMLError) as exc:
        raise BakeryError(f"{template}: cannot render the property set: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise BakeryError(f"{template}: expected the template to render a YAML mapping")
    return data


def _check_overrides(manifest: Manifest) -> None:
    for key in manifest.properties:
        if key.startswith(RESERVED[:2]) or key in RESERVED[2:]:
            raise ManifestError(str(manifest.path), f"properties.{key}", "is set by the pipeline; remove it from the manifest")
        if key in NOT_PROPERTIES:
            raise ManifestError(str(manifest.path), f"properties.{key}", "is a Glance core field, not a property; set it under image:")
