"""Glue between the Invoke tasks and the pipeline: one error line, a JSON report, exit codes."""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

from invoke.exceptions import Exit

from pipeline.common.errors import BakeryError, bounded, disk_full, for_terminal
from pipeline.common.paths import state_dir
from pipeline.common.report import Report, print_summary
from pipeline.common.secrets import redact
from pipeline.glance import errors as client_errors

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a job that was terminated


class Cancelled(KeyboardInterrupt):
    """SIGTERM (a CI job cancelled, or past its timeout): unwound like Ctrl-C, so every stage's clean-up runs
    (mounts, daemons, VMs, partial images, work directories)."""


def _cancel_on_sigterm() -> None:
    def cancel(signum, frame):
        raise Cancelled(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, cancel)
    except ValueError:  # not the main thread (a test calling execute): nothing to install
        pass


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries' own warnings (oslo's format inspector logs every refusal it makes) would turn a one-line
    # error into several lines: only the pipeline's warnings are shown, unless verbose.
    root.setLevel(logging.DEBUG if verbose else logging.ERROR)
    logging.getLogger("pipeline").setLevel(logging.DEBUG if verbose else logging.WARNING)
    # qemu.qmp logs its own view of a connection cut short (a cancelled run) as CRITICAL, with a traceback:
    # the run's one line already says what happened.
    logging.getLogger("qemu.qmp").setLevel(logging.DEBUG if verbose else logging.CRITICAL + 1)


def execute(
    command: str,
    json_path: str | None,
    action: Callable[[Report], object],
    *,
    summary: bool = True,
    on_error: Callable[[Report], None] | None = None,
) -> Report:
    """Run one command; errors become one line on stderr (and in the report), never a traceback."""
    configure_logging()
    _cancel_on_sigterm()
    report = Report(command)
    code = 0
    report_writable = False
    try:
        _check_report_path(json_path)
        report_writable = True
        action(report)
    except BakeryError as exc:
        report.error = exc.one_line()
        code = EXIT_ERROR
    except Cancelled:
        report.error = f"{command} cancelled (SIGTERM): its mounts, processes and work files were cleaned up; nothing was released"
        code = EXIT_TERMINATED
    except KeyboardInterrupt:
        report.error = "interrupted"
        code = EXIT_INTERRUPTED
    except Exception as exc:  # a client error or a full disk is one line; anything else is a bug of ours
        described = client_errors.describe(exc) or _disk_full(exc)
        if described:
            report.error = BakeryError(described[0], hint=described[1]).one_line()
            code = EXIT_ERROR
        else:
            report.error = _internal_error(exc)
            code = EXIT_ERROR
    finally:
        if json_path and report_writable and not _write_report(report, json_path):
            code = code or EXIT_ERROR
    if summary and (report.ok or report.target):
        print_summary(report)
    if code:
        if on_error:
            on_error(report)
        print(f"error: {report.error}", file=sys.stderr)
        raise Exit(code=code)
    return report


def _check_report_path(json_path: str | None) -> None:
    """--json names where CI collects the report: a path that cannot be written is refused before any work,
    not found out after an hour's build (its folder is created, as CI's `reports/` often does not exist yet)."""
    if not json_path:
        return
    path = Path(json_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BakeryError(f"--json {json_path}: cannot create its folder ({exc.strerror})") from None
    if path.is_dir() or not os.access(path.parent, os.W_OK):
        raise BakeryError(f"--json {json_path}: expected a file path in a writable folder")


def _write_report(report: Report, json_path: str) -> bool:
    try:
        report.write(json_path)
        return True
    except OSError as exc:  # one error line still: the command's own error, if any, comes first
        failure = f"--json {json_path}: the report could not be written ({exc.strerror})"
        report.error = bounded(f"{report.error} (and {failure})" if report.error else failure)
        return False


def _disk_full(exc: Exception) -> tuple[str, str] | None:
    """A file system that filled up (or a quota) is the machine's state, not a bug: say where, and what to change."""
    if not disk_full(exc):
        return None
    where = f" writing {exc.filename}" if exc.filename else ""
    return (f"no space left on device{where} ({exc.strerror}; state directory {state_dir()})",
            "free space there, or point BAKERY_STATE_DIR / BAKERY_CACHE_DIR at a larger disk")


def _internal_error(exc: Exception) -> str:
    """A bug of ours: keep the traceback in a file, show one line."""
    try:
        log = state_dir() / "logs" / "last-traceback.txt"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(redact(traceback.format_exc()))
    except (BakeryError, OSError):  # the state directory itself is what failed: the traceback goes to a temporary file
        with tempfile.NamedTemporaryFile("w", prefix="bakery-traceback-", suffix=".txt", delete=False) as kept:
            kept.write(redact(traceback.format_exc()))
        log = Path(kept.name)
    return bounded(f"internal error: {type(exc).__name__}: {redact(str(exc))} (traceback in {log})")


def emit(line: str) -> None:
    """One line of a command's output on stdout: values from servers, registries and manifests pass through
    here, so none can restyle the terminal or start a line of its own."""
    print(for_terminal(line))


def print_findings(report: Report) -> None:
    """Lint findings for people: what, where, why (the rule's source)."""
    from pipeline.properties.lint import RULES

    for finding in report.lint:
        where = f" {finding['property']}:" if finding["property"] else ""
        line = f"{finding['severity']:<10} [{finding['rule']}]{where} {finding['message']}"
        if finding.get("reason"):
            line += f" (suppressed: {finding['reason']})"
        emit(line)
        if finding["severity"] == "error" and finding["rule"] in RULES:
            emit(f"           why: {RULES[finding['rule']].summary}")
            emit(f"           see: {RULES[finding['rule']].source}")
    if not report.lint and not report.error:  # a command that failed before linting found nothing because it did not look
        emit("no findings")


def print_audit(report: Report) -> None:
    for image in report.details.get("images", []):
        errors = [f for f in image["findings"] if f["severity"] == "error"]
        state = "ok" if not errors else f"{len(errors)} error(s)"
        if image.get("uploading"):
            state += "; still marked uploading"
        emit(f"{image['id']}  {image['name']!s:<45} recommended={image['recommended']!s:<5} {state}")
        for finding in image["findings"]:
            where = f" {finding['property']}:" if finding["property"] else ""
            emit(f"    {finding['severity']:<8} [{finding['rule']}]{where} {finding['message']}")
    for upload in report.details.get("uploading", []):
        state = "ABANDONED" if upload["abandoned"] else "live"
        emit(f"upload {upload['id']}  {upload['name']!s:<45} {state}: {upload['why']}")
    repaired = report.details.get("repaired")
    if repaired:
        emit(f"repaired: deleted {len(repaired['deleted_uploads'])} abandoned upload(s); converged {len(repaired['families'])} family(ies)")
    strays = report.details.get("stray_files")
    if strays and strays["files"]:
        done = "removed" if strays["removed"] else "left (audit --repair removes them)"
        emit(f"local Glance store: {len(strays['files'])} file(s), {strays['bytes']:,} bytes, that no image accounts for: {done}")
    for family in report.details.get("families", []):
        health = "; ".join(family["problems"]) or "healthy"
        emit(f"family {family['family']} (owner {family['owner']}): {family['images']} image(s): {health}")
    standard = report.details.get("standard")
    if standard:
        emit(f"{standard['name']}: {standard['conforming']} of {standard['images']} image(s) conform")
        for finding in standard["findings"]:
            emit(f"    {finding['level']:<8} {finding['image']}: {finding['message']}")


def print_lifecycle(report: Report) -> None:
    for entry in report.details.get("targets", []):
        planned = entry.get("plan") or {}
        emit(f"{entry['name']}: family {'/'.join(planned.get('family', {}).values())}, ages counted to {planned.get('today')}"
              + ("" if entry.get("applied") else " (plan only: nothing changed; --apply carries it out)"))
        for decision in planned.get("decisions", []):
            state = " FAILED: " + decision["error"] if decision["error"] else (" done" if decision["done"] else "")
            emit(f"    {decision['action']:<10} {decision['id']}  {decision['name']!s:<40} {decision['why']}{state}")


def print_inspection(report: Report) -> None:
    facts = report.details.get("facts")
    if not facts:
        return
    windows, layout = facts["windows"], facts["layout"]
    rows = [
        ("image", f"{facts['image']} ({facts['format']}, {facts['virtual_size']:,} bytes virtual)"),
        ("product", f"{windows['product_name']} ({windows['edition_id']}, {windows['installation_type']})"),
        ("version", f"{windows['major']}.{windows['minor']} build {windows['build']} {windows['display_version']}".rstrip()),
        ("arch", f"{windows['arch']} (architecture {windows.get('architecture') or 'unknown'})"),
        ("control set", f"{windows['control_set']} boots (Select\\Default); Select names {', '.join(windows.get('control_sets') or [windows['control_set']])}"),
        ("hives", _hive_summary(facts.get("hives", {}))),
        ("layout", f"{layout['label']} -> {facts['firmware']}; Windows on partition {facts['windows_partition']} of {len(layout['partitions'])}"),
        ("virtio-win dir", windows.get("virtio_os_dir", "")),
        ("DevicePath", facts["device_path"]),
        ("first boot", _firstboot_summary(facts)),
        ("guest agent", ", ".join(k for k, v in facts["guest_agent"].items() if v) or "absent"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        emit(f"{name:<{width}}  {value}")
    print()
    emit(f"{'driver':<10} {'service Start':<13} {'.sys':<5} {'boot reg.':<9} {'staged':<18} installed")
    for name, state in facts["drivers"].items():
        if not state["present"] and state["service_start"] is None:
            continue
        start = "-" if state["service_start"] is None else str(state["service_start"])
        emit(f"{name:<10} {start:<13} {'yes' if state['sys_file'] else 'no':<5} {'yes' if state['boot_registered'] else 'no':<9} "
              f"{state['staged_version'] or '-':<18} {', '.join(state['installed_versions']) or '-'}")


def _hive_summary(hives: dict) -> str:
    parts = []
    for name, state in hives.items():
        if state["clean"]:
            parts.append(f"{name} clean")
        else:
            logs = f", pending in {', '.join(state['pending_logs'])}" if state["pending_logs"] else ""
            parts.append(f"{name} NOT clean (sequence {state['primary_sequence']}/{state['secondary_sequence']}{logs})")
    return "; ".join(parts) or "-"


def _firstboot_summary(facts: dict) -> str:
    if not facts["firstboot"]:
        return "none"
    hooks = ", ".join(facts.get("firstboot_hooks") or []) or "no hook found"
    when = "runs at boot without a logon" if facts.get("firstboot_at_boot") else "needs sysprep or a logon"
    by = ", ".join(facts.get("firstboot_mechanisms") or []) or facts.get("firstboot_by") or "unknown"
    return f"by {by} via {hooks} ({when})"


def print_cache(report: Report) -> None:
    cache = report.details.get("cache")
    if not cache:
        return
    entries = cache["entries"]
    total = sum(e["bytes"] for e in entries)
    for name in report.details.get("evicted", []):
        emit(f"evicted  {name}")
    for entry in entries:
        emit(f"{entry['stage']:<8} {entry['id'][:16]}  {entry['bytes'] / 2**20:>10,.1f} MiB  last used {entry['last_used']}")
    emit(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {total / 2**30:.2f} GiB of {cache['limit_bytes'] / 2**30:.1f} GiB"
          f" in {cache['root']}")
