"""Reading images from Glance, shared by publish, audit, explain, inspect and rebuild."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import BinaryIO

from glanceclient import exc as glance_exc

from pipeline.common.errors import BakeryError
from pipeline.glance.connect import Target

# Present on an image only while the bakery has not verified it yet (created, uploading, checking).
STATE_KEY = "bakery_state"
# Glance's own image fields: everything else on an image is a custom property.
GLANCE_FIELDS = frozenset({
    "id", "name", "status", "visibility", "os_hidden", "protected", "owner", "created_at", "updated_at", "tags",
    "file", "schema", "self", "checksum", "os_hash_algo", "os_hash_value", "size", "virtual_size", "stores",
    "locations", "direct_url", "min_disk", "min_ram", "disk_format", "container_format",
})


def fetch_image(target: Target, image_id: str) -> dict:
    try:
        return dict(target.glance.images.get(image_id))
    except glance_exc.HTTPNotFound:
        raise BakeryError(f"image {image_id} not found in {target.description}") from None


def list_including_hidden(target: Target, filters: dict | None = None, **kwargs) -> Iterator[dict]:
    """Images matching `filters`, hidden ones too: Glance lists an os_hidden image only when os_hidden=true
    is asked for, and then only hidden ones, so it takes two listings."""
    for hidden in ({}, {"os_hidden": True}):
        for image in target.glance.images.list(filters={**(filters or {}), **hidden}, **kwargs):
            yield dict(image)


def custom_properties(image: dict) -> dict:
    """Custom properties, plus min_disk (as a string), which the lint rules check against virtual_size."""
    props = {k: v for k, v in image.items() if k not in GLANCE_FIELDS and not k.startswith("os_glance_")}  # os_glance_*: Glance's own
    if image.get("min_disk") is not None:
        props["min_disk"] = str(image["min_disk"])
    return props


def stream(target: Target, image_id: str) -> Iterator[bytes]:
    """An image's data, chunk by chunk (glanceclient checks the md5 as it streams)."""
    yield from target.glance.images.data(image_id)


def download(target: Target, image_id: str, destination: BinaryIO, on_read: Callable[[int], None] = lambda n: None) -> None:
    """Stream an image's data into an open binary file, sparse: runs of zeros are skipped, not written,
    so a 40 GB Windows disk that is mostly free space takes only its used blocks on the host."""
    for chunk in stream(target, image_id):
        if chunk.count(0) == len(chunk):
            destination.seek(len(chunk), 1)
        else:
            destination.write(chunk)
        on_read(len(chunk))
    destination.truncate()  # a trailing hole still counts in the file's length

