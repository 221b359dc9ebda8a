"""Rendering a manifest: Jinja2's sandbox over the YAML text, then YAML with the line of every key.

The render context is deliberately small: the release date and the `--set` variables, nothing from the
environment, so the same manifest and arguments always render the same text (the build id depends on it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.loaders import split_template_path
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pipeline.common.deadline import DeadlineExpired, deadline
from pipeline.common.errors import ManifestError, MissingVariable

MAX_INCLUDE_DEPTH = 4
MAX_DOCUMENT_BYTES = 1024 * 1024  # a manifest is a page of YAML; a 10 MB name is an attack, not a release
MAX_NODES = 20_000  # YAML nodes once aliases are expanded (a "billion laughs" document expands to 10**9)
RENDER_TIMEOUT_S = 10.0  # Jinja's sandbox caps range() but not nested loops that print nothing


class _OutsideFolder(Exception):
    def __init__(self, name: str):
        self.name = name


class _ConfinedLoader(jinja2.BaseLoader):
    """Templates from `search`, and only if their real path (symlinks resolved) is inside `root`."""

    def __init__(self, search: Path, root: Path, top: Path):
        self.search, self.root, self.top = search, root, top

    def get_source(self, environment, template: str):
        path = self.search.joinpath(*split_template_path(template))  # refuses ".." and absolute names
        real = path.resolve()
        if real != self.top and not real.is_relative_to(self.root):
            raise _OutsideFolder(template)
        if not real.is_file():
            raise jinja2.TemplateNotFound(template)
        return read_document(path, what="manifest" if real == self.top else f"template {template!r}"), str(path), lambda: True


def read_document(path: Path, *, what: str = "manifest") -> str:
    """A manifest or template file as text: a regular file, of bounded size, in UTF-8."""
    if not path.is_file():
        raise ManifestError(str(path), None, f"{what}: not a regular file")
    size = path.stat().st_size
    if size > MAX_DOCUMENT_BYTES:
        raise ManifestError(str(path), None, f"{what}: {size:,} bytes is more than a manifest may be ({MAX_DOCUMENT_BYTES:,})")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(str(path), None, f"{what}: not UTF-8 text (byte {exc.start})") from None


def _environment(directory: Path, root: Path, top: Path) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=_ConfinedLoader(directory, root, top),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_text(path: Path, context: dict[str, str], *, root: Path | None = None) -> str:
    """Render a manifest file; `{% include %}`, `{% import %}` and `{% extends %}` stay inside `root`."""
    root = root or path.parent.resolve()
    env = _environment(path.parent, root, path.resolve())
    try:
        with deadline(RENDER_TIMEOUT_S):
            return _bounded_render(env.get_template(path.name), context, path)
    except ManifestError:
        raise
    except _OutsideFolder as exc:
        raise ManifestError(str(path), None, f"template {exc.name!r} is outside the manifest's folder {root} "
                            "(templates may include or import only files inside it)", line=_template_line(exc, path)) from None
    except DeadlineExpired:
        raise ManifestError(str(path), None, f"rendering took longer than {RENDER_TIMEOUT_S:.0f} s (a runaway loop?)") from None
    except jinja2.TemplateNotFound as exc:
        raise ManifestError(str(path), None, f"template {exc.name!r} not found in the manifest's folder {path.parent}",
                            line=_template_line(exc, path)) from None
    except jinja2.TemplateSyntaxError as exc:
        raise ManifestError(str(path), None, f"template syntax error: {exc.message}", line=exc.lineno) from None
    except jinja2.UndefinedError as exc:
        line = _template_line(exc, path)
        name = exc.message.split("'")[1] if exc.message and exc.message.count("'") >= 2 else ""
        raise MissingVariable(
            str(path), name, f"{exc.message}; known variables: {', '.join(sorted(context))} (add --set NAME=VALUE)", line=line
        ) from None
    except jinja2.TemplateError as exc:
        raise ManifestError(str(path), None, f"template error: {exc}", line=_template_line(exc, path)) from None
    except Exception as exc:  # a sandbox SecurityError and friends: still one line, never a traceback
        raise ManifestError(str(path), None, f"template error: {exc}", line=_template_line(exc, path)) from None


def _bounded_render(template: jinja2.Template, context: dict[str, str], path: Path) -> str:
    chunks, size = [], 0
    for chunk in template.generate(context):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_DOCUMENT_BYTES:
            raise ManifestError(str(path), None, f"the rendered manifest exceeds {MAX_DOCUMENT_BYTES:,} characters")
    return "".join(chunks)


def _template_line(exc: BaseException, path: Path) -> int | None:
    """Jinja rewrites tracebacks so that template frames carry the template's file name and line."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == str(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _parse_yaml(path: Path, text: str) -> tuple[Any, dict[tuple, int]]:
    """YAML (safe tags only) with the line of every key; duplicate keys and alias bombs are refused."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        positions: dict[tuple, int] = {}
        if node is not None:
            _check_expansion(path, node)
            _record_positions(path, node, (), positions)
        document = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(str(path), None, f"invalid YAML: {problem}", line=mark.line + 1 if mark else None) from None
    finally:
        loader.dispose()
    return document, positions


def _check_expansion(path: Path, root: yaml.Node) -> None:
    """Count the nodes the document has once every alias is expanded, without expanding it; a document over
    the limit is refused naming the key that holds the expansion (lint.suppress), as the user wrote it."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise ManifestError(str(path), None, "a YAML alias refers to itself (a recursive document)", line=node.start_mark.line + 1)
        in_progress.add(key)
        total = 1 + sum(size(child) for _, _, child in _children(node))
        in_progress.discard(key)
        sizes[key] = total
        return total

    total = size(root)
    if total <= MAX_NODES:
        return
    keys, node, line = (), root, root.start_mark.line + 1
    # down the largest child each time (the last of equals: an anchor is defined before the key that uses it)
    while isinstance(node, yaml.MappingNode) and (
            over := [(sizes[id(child)], order, name, at, child) for order, (name, at, child) in enumerate(_children(node))
                     if sizes[id(child)] > MAX_NODES]):
        _, _, name, line, node = max(over, key=lambda entry: entry[:2])
        keys += (name,)
    raise ManifestError(str(path), ".".join(str(k) for k in keys) or None,
                        f"its YAML aliases expand to {sizes[id(node)]:,} nodes, more than {MAX_NODES:,} (an alias bomb)", line=line)


def _children(node: yaml.Node) -> list[tuple[object, int, yaml.Node]]:
    """(name, line, node) of a mapping's keys and values, or a sequence's items; a key node counts too."""
    if isinstance(node, yaml.MappingNode):
        pairs = []
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            pairs += [(name, key_node.start_mark.line + 1, key_node), (name, key_node.start_mark.line + 1, value_node)]
        return pairs
    if isinstance(node, yaml.SequenceNode):
        return [(index, item.start_mark.line + 1, item) for index, item in enumerate(node.value)]
    return []


def _record_positions(path: Path, node: yaml.Node, prefix: tuple, out: dict[tuple, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                _record_positions(path, value_node, prefix, out)
                continue
            line = key_node.start_mark.line + 1
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(line)
            if name in seen:
                field = ".".join(str(k) for k in prefix + (name,))
                raise ManifestError(str(path), field, f"duplicate key (also at line {seen[name]}): the last one would silently "
                                    "win; keep one", line=line)
            seen[name] = line
            key = prefix + (name,)
            out[key] = line
            _record_positions(path, value_node, key, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out[prefix + (index,)] = item.start_mark.line + 1
            _record_positions(path, item, prefix + (index,), out)


def load_with_includes(path: Path, context: dict[str, str], depth: int = 0, *,
                       root: Path | None = None) -> tuple[dict, dict[tuple, tuple[Path, int]]]:
    """Render and parse a manifest; `include:` names files (relative to it, inside the top manifest's
    folder) whose data it overrides."""
    root = root or path.parent.resolve()
    document, lines = _parse_yaml(path, render_text(path, context, root=root))
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
    for index, name in enumerate(includes):
        line = lines.get(("include", index), lines.get(("include",)))
        if depth >= MAX_INCLUDE_DEPTH:
            raise ManifestError(str(path), "include", f"includes nested deeper than {MAX_INCLUDE_DEPTH}", line=line)
        included = path.parent / name
        if not included.resolve().is_relative_to(root):
            raise ManifestError(str(path), "include", f"{name!r} is outside the manifest's folder {root} "
                                "(includes must stay inside it)", line=line)
        if not included.is_file():
            raise ManifestError(str(path), "include", f"included file {name!r} not found", line=line)
        data, data_positions = load_with_includes(included, context, depth + 1, root=root)
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


