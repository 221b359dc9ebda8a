"""The one way this project starts a subprocess: logged, checked, and turned into a one-line error."""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pipeline.common.errors import BakeryError

log = logging.getLogger(__name__)


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BakeryError(f"{name} not found on PATH", hint=f"install the Debian package {package}, or run `make deps`")
    return path


def run(
    argv: Sequence[str | Path],
    *,
    check: bool = True,
    capture: bool = True,
    timeout: float | None = None,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    args = [str(a) for a in argv]
    log.debug("run: %s", shlex.join(args))
    try:
        proc = subprocess.run(
            args,
            check=False,
            capture_output=capture,
            timeout=timeout,
            input=input,
            env=env,
            cwd=cwd,
        )
    except FileNotFoundError as exc:
        raise BakeryError(f"{args[0]}: command not found", hint="run `make deps`") from exc
    except subprocess.TimeoutExpired as exc:
        raise BakeryError(f"{args[0]} did not finish within {timeout:.0f} s: {shlex.join(args)}") from exc
    if check and proc.returncode != 0:
        detail = _last_line(proc.stderr) or _last_line(proc.stdout) or "no output"
        raise BakeryError(f"{shlex.join(args)} failed with exit code {proc.returncode}: {detail}")
    return proc


def _last_line(output: bytes | None) -> str:
    if not output:
        return ""
    lines = [line.strip() for line in output.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""
