"""The checks at the places a value leaves the bakery for another program: a shell line, a QEMU option, a name.

Each sink has its own rules, checked where the value lands, whatever checked it upstream (a lint rule can be
suppressed; a record can be edited): README's "Untrusted inputs" has the map of which values reach which sink.
"""

from __future__ import annotations

import re
import shlex
import unicodedata

from pipeline.common.errors import BakeryError

# QEMU machine types Nova and QEMU accept on x86: the aliases and their versioned names (pc-i440fx-9.2,
# pc-q35-8.2, RHEL's pc-q35-rhel9.4.0). No comma or "=": the value is one QEMU option value, never more.
MACHINE_TYPE = re.compile(r"^(pc|q35|pc-(i440fx|q35)-(\d{1,2}\.\d{1,2}|rhel\d{1,2}\.\d{1,2}\.\d{1,2}))$")


def one_line(label: str, value: str) -> str:
    """A value that lands in a line another program parses (a CI job's script, a log): one printable line."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BakeryError(f"{label}: {value!r} is not valid UTF-8") from None
    for position, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            raise BakeryError(f"{label}: {value!r} holds U+{ord(char):04X} ({unicodedata.name(char, 'a control character')}) "
                              f"at character {position + 1}; refused, a CI runner or GitLab would treat it specially")
    return value


def argument(label: str, value: str) -> str:
    """A value that becomes one argument of a command: one line, and not something a parser takes for an option."""
    one_line(label, value)
    if not value or value.startswith("-"):
        raise BakeryError(f"{label}: {value!r} {'is empty' if not value else 'starts with -'}; refused, a command would read "
                          "it as an option")
    return value


def script_word(label: str, value: str) -> str:
    """A value that becomes one quoted word of a CI job's script line. Quoting makes it one word for the shell;
    a backtick is refused as well, because gitlab-ci-local echoes each line inside double quotes before
    running it, where a backtick is still a command substitution."""
    argument(label, value)
    if "`" in value:
        raise BakeryError(f"{label}: {value!r} holds a backtick; refused, a CI runner that echoes the line would run it")
    return value


def shell_line(*words: str, prefix: str = "") -> str:
    """A shell command line from words, each quoted (a file name with $(...), a backtick or a space stays one
    word); `prefix` is shell text the operator gave on purpose (how a job runs the bakery)."""
    line = shlex.join(words)
    return f"{prefix} {line}" if prefix else line


def machine_type(label: str, value: str) -> str:
    """A QEMU/Nova machine type: the value of -machine, so nothing that could add an option to it."""
    if not isinstance(value, str) or not MACHINE_TYPE.fullmatch(value):
        raise BakeryError(f"{label}: hw_machine_type {value!r} is not a machine type Nova and QEMU accept; expected pc, q35, "
                          "pc-i440fx-X.Y or pc-q35-X.Y (no commas, no options)")
    return value


def qemu_value(value: object) -> str:
    """A value inside a QEMU option list (file=...,id=...): commas doubled, as QEMU's option parser reads them,
    so a path with a comma cannot add an option; no control character."""
    text = str(value)
    if any(unicodedata.category(char) == "Cc" for char in text):
        raise BakeryError(f"QEMU option value {text!r} holds a control character; refused")
    return text.replace(",", ",,")
