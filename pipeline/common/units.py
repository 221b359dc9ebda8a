"""Sizes as people read them."""

from __future__ import annotations


def human_size(value: int | float | None) -> str:
    """512 B, 1.5 KiB, 80.0 MiB ... in binary units, one decimal above bytes."""
    if value is None:
        return "?"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{value} B"
