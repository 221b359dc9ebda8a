"""The bill of materials of a built image, read offline from the image (CycloneDX JSON), and what changed
between two of them. Imports windows (the inventory) and common; repro runs it as a stage, notes and the
chain read it."""

from pipeline.sbom.document import SBOM_FILE, Sbom, build_sbom, load_sbom

__all__ = ["SBOM_FILE", "Sbom", "build_sbom", "load_sbom"]
