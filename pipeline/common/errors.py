"""One exception type for everything a user can fix; it always renders as one line."""

from __future__ import annotations

MAX_LINE = 1000  # an error line is read by people in a CI log: a hostile input must not make it megabytes


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
        return bounded(redact(text))


OUTPUT_LINE = 4000  # a line of a command's output (an audit row, a status line): longer than an error may be


def for_terminal(text: object, limit: int = OUTPUT_LINE) -> str:
    """A line as it may reach a terminal or a CI log: secrets masked, control and format characters shown
    escaped (a name with an escape sequence or a line break, from a server or a registry, must not restyle
    the terminal or forge an `error:` line), bounded."""
    from pipeline.common.secrets import redact

    return bounded(redact(str(text)), limit)


def disk_full(exc: BaseException) -> bool:
    """A file system that filled up, or a quota: the machine's state, not a bug."""
    import errno

    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def bounded(text: str, limit: int = MAX_LINE) -> str:
    """At most `limit` characters, printable ones only (a bell or a right-to-left override is shown escaped)."""
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    if len(text) <= limit:
        return text
    return text[: limit - 30] + f"... [{len(text) - limit + 30:,} more characters]"


class ManifestError(BakeryError):
    """The manifest (or a file it includes) is wrong."""

    def __init__(self, file: str, field: str | None, expected: str, *, line: int | None = None):
        where = file if line is None else f"{file}:{line}"
        subject = f"{where}: {field}: " if field else f"{where}: "
        super().__init__(subject + expected)
        self.file, self.field, self.line = file, field, line


class MissingVariable(ManifestError):
    """The manifest names a variable nobody gave (--set NAME=VALUE): known only at run time."""

    def __init__(self, file: str, name: str, expected: str, *, line: int | None = None):
        super().__init__(file, None, expected, line=line)
        self.name = name


class LintFailed(BakeryError):
    """The rendered property set has errors; nothing was published."""

    def __init__(self, findings, *, where: str | None = None, outcome: str = "nothing was published"):
        """where: the file (and line and field) the first error comes from, as the user wrote it;
        outcome: what that means for the run (a lint of an image already in Glance changes nothing)."""
        self.findings = findings
        errors = [f for f in findings if f.severity == "error"]
        first = errors[0]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{where + ': ' if where else ''}lint: {first.one_line()}{more}; {outcome}")


class PublishError(BakeryError):
    """Upload or verification failed; the partial image was removed (or queued for removal)."""
