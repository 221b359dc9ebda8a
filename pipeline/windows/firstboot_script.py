"""The first-boot script that installs the staged virtio drivers (and the guest agent) inside Windows.

It is marked done only when every install succeeded; a failed attempt is logged, counted in a file beside it
and tried again at the next boot, MAX_ATTEMPTS times at most, so a pnputil that failed once (a device not yet
enumerated, a pending reboot) is not taken for success forever. pnputil's and msiexec's exit codes that mean
success: 0; 3010 (a reboot is needed); 259 for pnputil (ERROR_NO_MORE_ITEMS: no device to install it on yet);
1641 for msiexec (it started a reboot).
"""

from __future__ import annotations

NAME = "install-virtio-drivers.cmd"
MAX_ATTEMPTS = 5
MODERN_PNPUTIL_BUILD = 14393  # Windows 10 1607 / Server 2016: pnputil /add-driver


def install_script(*, build: int, virtio_win_version: str) -> str:
    """The script's text, CRLF line ends, ASCII."""
    if build >= MODERN_PNPUTIL_BUILD:
        install = ['pnputil /add-driver "%~dp0*.inf" /subdirs /install >> "%LOG%" 2>&1',
                   "call :accepted !ERRORLEVEL! 0 3010 259"]
    else:
        install = ['for /r "%~dp0" %%i in (*.inf) do (',
                   '  pnputil -i -a "%%i" >> "%LOG%" 2>&1',
                   "  call :accepted !ERRORLEVEL! 0 3010 259",
                   ")"]
    lines = [
        "@echo off",
        "setlocal EnableDelayedExpansion",
        f"rem Written by the image bakery (virtio-win {virtio_win_version}): install the staged virtio drivers. Marked done",
        f"rem only when every install succeeded; otherwise tried again at the next boot, {MAX_ATTEMPTS} times at most.",
        'set "LOG=%SystemRoot%\\Temp\\bakery-virtio-drivers.log"',
        'set "MARK=%~dp0installed.txt"',
        'set "TRIES=%~dp0attempts.txt"',
        'if exist "%MARK%" exit /b 0',
        "set ATTEMPT=0",
        'if exist "%TRIES%" set /p ATTEMPT=<"%TRIES%"',
        "set /a ATTEMPT=ATTEMPT+1",
        f"if !ATTEMPT! GTR {MAX_ATTEMPTS} (",
        f'  echo bakery: gave up after {MAX_ATTEMPTS} attempts >> "%LOG%"',
        "  exit /b 1",
        ")",
        '>"%TRIES%" echo !ATTEMPT!',
        f'echo bakery: attempt !ATTEMPT! of {MAX_ATTEMPTS} >> "%LOG%"',
        'set "FAILED=0"',
        *install,
        'for %%m in ("%~dp0guest-agent\\*.msi") do (',
        '  msiexec /i "%%~fm" /qn /norestart >> "%LOG%" 2>&1',
        "  call :accepted !ERRORLEVEL! 0 3010 1641",
        ")",
        "if !FAILED! NEQ 0 (",
        '  echo bakery: attempt !ATTEMPT! failed; trying again at the next boot >> "%LOG%"',
        "  exit /b 1",
        ")",
        'echo done > "%MARK%"',
        "exit /b 0",
        "",
        "rem :accepted CODE OK... - FAILED=1 unless CODE is one of the OK codes",
        ":accepted",
        'set "RC=%~1"',
        ":accepted_next",
        "shift",
        'if "%~1"=="" (',
        '  set "FAILED=1"',
        '  echo bakery: exit code !RC! >> "%LOG%"',
        "  exit /b 0",
        ")",
        'if "!RC!"=="%~1" exit /b 0',
        "goto accepted_next",
    ]
    return "\r\n".join(lines) + "\r\n"
