"""Content addresses: a stage's id is the sha256 of everything that decides its output (osbuild's idea).

The cache is keyed by them, the lock records what feeds them, and a rebuild compares against them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from pipeline import __version__
from pipeline.build import provision
from pipeline.build.bake import elements
from pipeline.build.bake import refresh as bake_stage
from pipeline.build.install.windows_setup import templates_sha256
from pipeline.common.toolversions import tool_versions
from pipeline.manifest import Manifest


@dataclass(frozen=True)
class StageIds:
    """Content addresses of the stages: each is the sha256 of everything that determines its output."""

    install: str | None  # the disk Setup leaves (installs only)
    build: str  # the raw image: bake, or convert (+ inspection for installs)
    measure: str  # size, md5, sha512 of that raw image
    provision: str | None = None  # the disk the provisioning steps leave (manifests with provision: only)

    def to_dict(self) -> dict:
        return {"install": self.install, "provision": self.provision, "build": self.build, "measure": self.measure}


def _digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def stage_ids(manifest: Manifest) -> StageIds:
    tools = tool_versions()
    install_id = None
    if manifest.install:
        install_id = _digest({"stage": "install", **manifest.install.to_dict(), "templates_sha256": templates_sha256(),
                              "tools": tools})
    provision_id = None
    if manifest.provision:
        provision_id = _digest({"stage": "provision", "input": install_id or manifest.source.sha256, **manifest.provision.to_dict(),
                                "templates_sha256": provision.templates_sha256(), "tools": tools})
    build = {"stage": "bake" if manifest.bake else "convert", "input": provision_id or install_id or manifest.source.sha256,
             "tools": tools, "inspect": bool(manifest.install or manifest.provision)}
    if manifest.bake:
        build.update(virtio_win_sha256=manifest.bake.virtio_win.sha256, drivers=list(manifest.bake.drivers),
                     elements_sha256=elements.content_sha256(bake_stage.resolve_elements(manifest.bake)),
                     qcow2=manifest.bake.qcow2, epoch=manifest.bake.epoch)
    build_stage = _digest(build)
    return StageIds(install_id, build_stage, _digest({"stage": "measure", "input": build_stage}), provision_id)


def canary_id(stages: StageIds, hardware, manifest: Manifest) -> str:
    """The canary's verdict holds for these bytes on this machine (as Nova derives it) with these limits."""
    return _digest({"stage": "canary", "input": stages.build, "domain": hardware.domain_xml, "vm": hardware.to_dict(),
                    "spec": manifest.canary.to_dict(), "memory_mib": hardware.vm.memory_mib, "pipeline_version": __version__})


def build_id(manifest: Manifest, *, template_sha256: str, stages: StageIds | None = None) -> str:
    """Content address of a release: the image's bytes (its stage id), the manifest and the properties template."""
    stages = stages or stage_ids(manifest)
    return _digest({
        "manifest_sha256": manifest.sha256,
        "release_date": manifest.release_date,
        "build_stage": stages.build,
        "properties_template_sha256": template_sha256,
        "pipeline_version": __version__,
    })
