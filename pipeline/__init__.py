"""The image bakery: bake Windows images for OpenStack, publish them to Glance, retire the previous release.

One module per stage of the chain:
manifest -> build -> measure -> properties (+ lint) -> publish -> release.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("image-bakery")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
