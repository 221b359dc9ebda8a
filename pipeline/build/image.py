"""What the build hands on: a raw image and what is known about it (facts, the bake, its cache entry)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.build.bake.refresh import BakeResult
from pipeline.diskimage.info import ImageInfo
from pipeline.manifest import Manifest
from pipeline.windows.inspection import ImageFacts


@dataclass(frozen=True)
class BuiltImage:
    path: Path | None  # the raw image to publish (None: not at hand, e.g. linting a manifest alone)
    info: ImageInfo | None
    source_path: Path
    source_sha256: str
    temporary: bool  # a work file of ours (deleted after publishing), not the user's source
    facts: ImageFacts | None = None  # what inspection found in the image (baked images)
    baked: BakeResult | None = None
    installed_virtio_win: str | None = None  # the virtio-win release Setup loaded, for an install without a bake
    cache_entry: str | None = None  # "<stage>/<id>" when the image lives in the stage cache
    source_format: str | None = None  # what the gate found the source to be (raw | qcow2)

    @property
    def virtio_win_version(self) -> str | None:
        return self.baked.virtio_win_version if self.baked else self.installed_virtio_win

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "format": self.info.format if self.info else None,
            "virtual_size": self.info.virtual_size if self.info else None,
            "source": str(self.source_path),
            "source_sha256": self.source_sha256,
            "cache_entry": self.cache_entry,
            "source_format": self.source_format,
            **({"bake": self.baked.to_dict()} if self.baked else {}),
            **({"facts": self.facts.to_dict()} if self.facts else {}),
        }


def origin_sha256(manifest: Manifest) -> str:
    """The pin of what the chain starts from: the source image, or the installation media."""
    return manifest.source.sha256 if manifest.source else manifest.install.media.sha256


@dataclass(frozen=True)
class RecordedFacts:
    """Facts as a cache entry recorded them: what properties and lint read, without mounting the image."""

    data: dict
    lint: dict

    def to_dict(self) -> dict:
        return self.data

    def lint_facts(self) -> dict:
        return dict(self.lint)


@dataclass(frozen=True)
class RecordedBake:
    data: dict

    @property
    def virtio_win_version(self) -> str:
        return self.data["virtio_win_version"]

    def to_dict(self) -> dict:
        return self.data



def discard(image: BuiltImage) -> None:
    if image.temporary:
        shutil.rmtree(image.path.parent, ignore_errors=True)
