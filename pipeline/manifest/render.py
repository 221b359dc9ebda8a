"""Rendering a manifest: Jinja2's sandbox over the YAML text, then YAML with the line of every key.

The render context is deliberately small: the release date and the `--set` variables, nothing from the
environment, so the same manifest and arguments always render the same text (the build id depends on it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pipeline.common.errors import ManifestError

MAX_INCLUDE_DEPTH = 4


def _environment(directory: Path) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_text(path: Path, context: dict[str, str]) -> str:
    env = _environment(path.parent)
    try:
        return env.get_template(path.name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise ManifestError(str(path), None, f"template syntax error: {exc.message}", line=exc.lineno) from None
    except jinja2.UndefinedError as exc:
        line = _template_line(exc, path)
        raise ManifestError(
            str(path), None, f"{exc.message}; known variables: {', '.join(sorted(context))} (add --set NAME=VALUE)", line=line
        ) from None
    except jinja2.TemplateError as exc:
        raise ManifestError(str(path), None, f"template error: {exc}", line=_template_line(exc, path)) from None
    except Exception as exc:  # a sandbox SecurityError and friends: still one line, never a traceback
        raise ManifestError(str(path), None, f"template error: {exc}", line=_template_line(exc, path)) from None


def _template_line(exc: BaseException, path: Path) -> int | None:
    """Jinja rewrites tracebacks so that template frames carry the template's file name and line."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == str(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _parse_yaml(path: Path, text: str) -> tuple[Any, dict[tuple, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(str(path), None, f"invalid YAML: {problem}", line=mark.line + 1 if mark else None) from None
    positions: dict[tuple, int] = {}
    if node is not None:
        _record_positions(node, (), positions)
    return document, positions


def _record_positions(node: yaml.Node, prefix: tuple, out: dict[tuple, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = prefix + (key_node.value,)
            out[key] = key_node.start_mark.line + 1
            _record_positions(value_node, key, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out[prefix + (index,)] = item.start_mark.line + 1
            _record_positions(item, prefix + (index,), out)


def load_with_includes(path: Path, context: dict[str, str], depth: int = 0) -> tuple[dict, dict[tuple, tuple[Path, int]]]:
    """Render and parse a manifest; `include:` names files (relative to it) whose data it overrides."""
    document, lines = _parse_yaml(path, render_text(path, context))
    if not isinstance(document, dict):
        raise ManifestError(str(path), None, "expected a YAML mapping at the top level")
    positions = {key: (path, line) for key, line in lines.items()}
    includes = document.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ManifestError(str(path), "include", "expected a file name or a list of file names", line=lines.get(("include",)))
    merged: dict = {}
    merged_positions: dict[tuple, tuple[Path, int]] = {}
    for name in includes:
        included = (path.parent / name).resolve()
        if depth >= MAX_INCLUDE_DEPTH:
            raise ManifestError(str(path), "include", f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
        if not included.is_file():
            raise ManifestError(str(path), "include", f"included file {name!r} not found", line=lines.get(("include",)))
        data, data_positions = load_with_includes(included, context, depth + 1)
        merged = _deep_merge(merged, data)
        merged_positions.update(data_positions)
    merged_positions.update(positions)
    return _deep_merge(merged, document), merged_positions


def _deep_merge(base: dict, override: dict) -> dict:
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _deep_merge(result[key], value)
        else:
            result[key] = value
    return result


