"""Where text from an image, a cloud or a manifest lands in a document: HTML through Jinja's autoescape
(a sandboxed environment, as every template of the bakery), Markdown through `md`, which escapes what
GitLab's and GitHub's renderers would read as markup or raw HTML."""

from __future__ import annotations

import re

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pipeline.common.paths import TEMPLATES
from pipeline.common.units import human_size

MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]#!|~])")
SLUG = re.compile(r"[^a-z0-9.-]+")


def environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(loader=jinja2.FileSystemLoader(str(TEMPLATES / "notes")), autoescape=True,
                                        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["size"] = human_size
    return env


def md(value: object) -> str:
    """A value as literal text in a Markdown table cell or line: one line, no markup, no raw HTML."""
    text = "".join(c if c.isprintable() else " " for c in ("" if value is None else str(value)))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return MARKDOWN_SPECIAL.sub(r"\\\1", text)


def slug(value: str) -> str:
    """A path part made from a name: lower case letters, digits, dots and dashes; never empty, never '.' or '..'."""
    text = SLUG.sub("-", value.lower()).strip("-.")[:80]
    return text or "unnamed"
