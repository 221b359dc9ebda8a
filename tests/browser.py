"""A real browser for the documents the bakery writes: Debian's chromium driven by Playwright (its own browser
download is never used), a phone-sized viewport, and the screenshot as pixels to check."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
PHONE = {"width": 412, "height": 900}


def browser_missing() -> str | None:
    if shutil.which("chromium") is None:
        return "chromium missing (Debian package chromium; CI installs it, `CI=1 make deps` too)"
    try:
        import PIL  # noqa: F401
        import playwright  # noqa: F401
    except ImportError:
        return "playwright or pillow missing (`make venv` installs the test extra)"
    return None


@dataclass
class Rendered:
    screenshot: object  # a PIL image of the whole page
    title: str
    dialogs: list[str] = field(default_factory=list)  # alert/confirm/prompt a script opened
    boxes: dict[str, list[dict]] = field(default_factory=dict)  # selector -> bounding boxes (page coordinates)
    images: list[dict] = field(default_factory=list)  # every <img>: src, naturalWidth, complete

    def crop(self, box: dict):
        return self.screenshot.crop((round(box["x"]), round(box["y"]), round(box["x"] + box["width"]), round(box["y"] + box["height"])))


def render(page: Path, selectors: tuple[str, ...] = (), tmp: Path | None = None) -> Rendered:
    """Open a local HTML file as a reader would (JavaScript on), and return what the screen shows."""
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    from PIL import Image
    from playwright.sync_api import sync_playwright

    shot = (tmp or page.parent) / f"{page.stem}-screenshot.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            view = browser.new_page(viewport=PHONE, device_scale_factor=1)
            dialogs: list[str] = []
            view.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            view.goto(page.resolve().as_uri())
            view.wait_for_load_state("load")
            boxes = {s: [e.bounding_box() for e in view.query_selector_all(s)] for s in selectors}
            images = view.evaluate("[...document.images].map(i => ({src: i.getAttribute('src'), naturalWidth: i.naturalWidth, complete: i.complete}))")
            title = view.title()
            view.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    return Rendered(Image.open(shot).convert("RGB"), title, dialogs, boxes, images)


def shows_picture(rendered: Rendered, box: dict, picture: Path, tolerance: float = 12.0) -> bool:
    """The region of the screen at `box` is `picture` (scaled to it): mean absolute difference per channel."""
    from PIL import Image, ImageChops, ImageStat

    shown = rendered.crop(box)
    expected = Image.open(picture).convert("RGB").resize(shown.size)
    difference = ImageStat.Stat(ImageChops.difference(shown, expected)).mean
    return sum(difference) / len(difference) < tolerance


def pixels_near(image, colour: tuple[int, int, int], distance: int = 40) -> int:
    """How many pixels of `image` are within `distance` (per channel) of `colour`."""
    return sum(1 for pixel in image.getdata() if all(abs(a - b) <= distance for a, b in zip(pixel, colour)))
