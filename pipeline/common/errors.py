"""One exception type for everything a user can fix; it always renders as one line."""

from __future__ import annotations


class BakeryError(Exception):
    """An error the user can act on. Its message is a single line: where, what, what was expected."""

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        from pipeline.common.secrets import redact

        text = " ".join(str(self).split())
        if self.hint:
            text += f" ({' '.join(self.hint.split())})"
        return redact(text)


class ManifestError(BakeryError):
    """The manifest (or a file it includes) is wrong."""

    def __init__(self, file: str, field: str | None, expected: str, *, line: int | None = None):
        where = file if line is None else f"{file}:{line}"
        subject = f"{where}: {field}: " if field else f"{where}: "
        super().__init__(subject + expected)
        self.file, self.field, self.line = file, field, line


class LintFailed(BakeryError):
    """The rendered property set has errors; nothing was published."""

    def __init__(self, findings):
        self.findings = findings
        errors = [f for f in findings if f.severity == "error"]
        first = errors[0]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"lint: {first.one_line()}{more}; nothing was published")


class PublishError(BakeryError):
    """Upload or verification failed; the partial image was removed (or queued for removal)."""
