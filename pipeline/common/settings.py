"""Numbers, ports and choices given on the command line or in the environment, checked where they enter.

Invoke converts an option with a numeric default itself and shows a Python traceback for "abc"; float() takes
"nan" and "inf", which then make a limit that never triggers or a retry that never stops. So options arrive
here as text and leave as a number in range, or as one line naming the option or variable that was wrong.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from pipeline.common.errors import BakeryError


def whole_number(value: object, name: str, *, low: int, high: int, default: int | None = None) -> int:
    """A decimal integer from low to high (`default` when value is None). Only plain digits (with a sign): "0x50",
    "1e3" and "12.0" are refused."""
    if value is None and default is not None:
        value = default
    text = str(value).strip()
    digits = text.removeprefix("-").removeprefix("+")
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 18) or not low <= int(text) <= high:
        raise BakeryError(f"{name}: expected a whole number from {low} to {high}, got {_shown(value)}")
    return int(text)


def decimal(value: object, name: str, *, low: float, high: float, unit: str = "") -> float:
    """A finite number from low to high (NaN and infinity are refused)."""
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and low <= number <= high):
        raise BakeryError(f"{name}: expected a number from {_plain(low)} to {_plain(high)}{' ' + unit if unit else ''}, "
                          f"got {_shown(value)}")
    return number


def tcp_port(value: object, name: str) -> int:
    return whole_number(value, name, low=1, high=65535)


def choice(value: object, name: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise BakeryError(f"{name}: expected one of {', '.join(allowed)}, got {_shown(value)}")
    return str(value)


def exactly_one(command: str, **given: object) -> str:
    """The one option of `given` that has a value (as its keyword): a command that reads a manifest or an image
    must be told which, and not both."""
    named = [name for name, value in given.items() if value]
    if len(named) != 1:
        options = " or ".join(f"--{name.replace('_', '-')}" for name in given)
        both = f" (got {' and '.join('--' + name.replace('_', '-') for name in named)})" if named else ""
        raise BakeryError(f"{command}: give exactly one of {options}{both}")
    return named[0]


def from_option_or_environment(given: object | None, option: str, variable: str, default: object) -> tuple[object, str]:
    """The value and the name to blame for it: the option when given, else the variable when set, else the default
    (blamed on the variable, which is where a user would change it)."""
    if given is not None:
        return given, option
    return os.environ.get(variable, default), variable


def port_setting(given: object | None, option: str, variable: str, default: int) -> int:
    return tcp_port(*from_option_or_environment(given, option, variable, default))


def directory_setting(variable: str, default: Path) -> Path:
    """A directory named by an environment variable: unset or empty means the default (an empty value used to
    mean the current directory, so state landed in the project's root); one that exists as something other
    than a directory is refused. A missing one is created by whoever writes into it."""
    value = os.environ.get(variable, "").strip()
    path = Path(value).resolve() if value else Path(default).resolve()
    if path.exists() and not path.is_dir():
        raise BakeryError(f"{variable}: {path} exists and is not a directory; expected a directory (created when missing)")
    return path


def _plain(number: float) -> str:
    return f"{int(number):,}" if float(number).is_integer() else f"{number:g}"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "...'"
