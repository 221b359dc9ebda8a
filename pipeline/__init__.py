"""The image bakery: bake Windows images for OpenStack, publish them to Glance, retire the previous release.

The sub-packages are the chain, and each imports only the layers below it (pyproject.toml's
import-linter contract, checked by tests/test_layout.py):

    cli, demo                    what tasks.py calls for presentation
    chain                        the one place that orders the stages
    repro                        stage ids, stage cache, lock files, rebuild
    publish                      measure + upload + verify, release (demote the previous one)
    properties                   render, lint, explain, audit
    build | synthetic            inputs, install, bake, convert | SYNTHETIC test inputs
    manifest | glance            the typed manifest | connecting to Glance, the local Glance
    windows                      registry, NTFS volume, drivers, virtio-win, facts
    diskimage                    qemu-img: format, virtual size, integrity
    common                       run, errors, progress, report, secrets, paths, digests, tool versions
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("image-bakery")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
