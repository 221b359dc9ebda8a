"""The bill of materials of a built image, read offline from the image (CycloneDX JSON), and what changed
between two of them."""

from pipeline.sbom.document import SBOM_FILE, Sbom, build_sbom, load_sbom

__all__ = ["SBOM_FILE", "Sbom", "build_sbom", "load_sbom"]
