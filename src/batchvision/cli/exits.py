"""One table from error to exit status, used by every command (README "Command line").

Scripts branch on the status: 2 means fix the command line or the request it makes, 3 install
the model the message names, 4 a file or the network failed (check the path or the server, then
retry), 1 anything else (every image of an `analyze` or `run` failed, a job that did not
complete, an unknown key, a server refusal).
Every failure is one `error: ...` line on stderr, never a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from enum import IntEnum

import typer

from batchvision.core.errors import BatchVisionError, ErrorCode


class ExitStatus(IntEnum):
    FAILED = 1
    USAGE = 2
    MODEL_UNAVAILABLE = 3
    IO = 4


# Every code, so a new one needs a decision here (tests check the table is complete).
EXIT_STATUS: dict[ErrorCode, ExitStatus] = {
    ErrorCode.INVALID_REQUEST: ExitStatus.USAGE,
    ErrorCode.INVALID_PARAMETER: ExitStatus.USAGE,
    ErrorCode.UNKNOWN_SKILL: ExitStatus.USAGE,
    ErrorCode.UNSUPPORTED_FORMAT: ExitStatus.USAGE,
    ErrorCode.PAYLOAD_TOO_LARGE: ExitStatus.USAGE,
    ErrorCode.TOO_MANY_IMAGES: ExitStatus.USAGE,
    ErrorCode.IMAGE_TOO_LARGE: ExitStatus.USAGE,
    ErrorCode.VIDEO_TOO_LARGE: ExitStatus.USAGE,
    ErrorCode.URL_NOT_ALLOWED: ExitStatus.USAGE,
    ErrorCode.MODEL_UNAVAILABLE: ExitStatus.MODEL_UNAVAILABLE,
    ErrorCode.FETCH_FAILED: ExitStatus.IO,
    ErrorCode.IMAGE_DECODE_FAILED: ExitStatus.FAILED,
    ErrorCode.VIDEO_DECODE_FAILED: ExitStatus.FAILED,
    ErrorCode.PROCESSING_ERROR: ExitStatus.FAILED,
    ErrorCode.OVERLOADED: ExitStatus.FAILED,
    ErrorCode.UNAUTHORIZED: ExitStatus.FAILED,
    ErrorCode.FORBIDDEN: ExitStatus.FAILED,
    ErrorCode.INSUFFICIENT_CREDITS: ExitStatus.FAILED,
    ErrorCode.RATE_LIMITED: ExitStatus.FAILED,
    ErrorCode.EXCEEDS_RATE_LIMIT: ExitStatus.USAGE,
    ErrorCode.INSUFFICIENT_STORAGE: ExitStatus.FAILED,
    ErrorCode.NOT_FOUND: ExitStatus.FAILED,
    ErrorCode.METHOD_NOT_ALLOWED: ExitStatus.FAILED,
    ErrorCode.INTERNAL_ERROR: ExitStatus.FAILED,
    # How a job ended: a job that did not complete is a failure, whatever the reason.
    ErrorCode.VALIDATION_ERROR: ExitStatus.FAILED,
    ErrorCode.LIMIT_EXCEEDED: ExitStatus.FAILED,
    ErrorCode.EMPTY_BATCH: ExitStatus.FAILED,
    ErrorCode.TIMEOUT: ExitStatus.FAILED,
    ErrorCode.PROCESSING_FAILED: ExitStatus.FAILED,
}

# What each status means besides its codes; the help epilog and the README say both.
MEANING: dict[ExitStatus, str] = {
    ExitStatus.FAILED: (
        "any other failure (every image of an analyze or run failed, a job that did not "
        "complete, an unknown key, …)"
    ),
    ExitStatus.USAGE: "usage error or invalid request",
    ExitStatus.MODEL_UNAVAILABLE: "model not installed; the message names the pull command",
    ExitStatus.IO: "file or network failure: local I/O, a model pull, an unreachable server",
}


def exit_status(code: ErrorCode | str) -> ExitStatus:
    """The status for an error code; codes outside ErrorCode (a server's own, such as a job's
    `validation_error`) are FAILED."""
    try:
        return EXIT_STATUS[ErrorCode(code)]
    except ValueError:
        return ExitStatus.FAILED


def codes_of(status: ExitStatus) -> list[str]:
    """The codes a status stands for; FAILED lists none, since it is everything else."""
    if status is ExitStatus.FAILED:
        return []
    return [code.value for code, mapped in EXIT_STATUS.items() if mapped is status]


def exit_status_help() -> str:
    """The `batchvision --help` epilog, built from the table so it cannot drift from it."""
    lines = ["Exit status: 0 success"]
    for status in sorted(ExitStatus):
        codes = ", ".join(codes_of(status))
        lines.append(f"{status.value} {MEANING[status]}" + (f" (codes: {codes})" if codes else ""))
    return "\n\n".join(lines)


class CliError(Exception):
    """A failure worth one `error: <message>` line on stderr and the given exit status."""

    def __init__(self, message: str, status: ExitStatus = ExitStatus.FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    @classmethod
    def of_code(cls, code: ErrorCode | str, message: str) -> CliError:
        """`<code>: <message>`, with the status the table gives the code."""
        return cls(f"{code}: {message}", exit_status(code))


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Around a command's body: expected failures end it with one line on stderr and the
    table's exit status. Anything else is a bug and keeps its traceback."""
    try:
        yield
    except CliError as exc:
        raise _exit(exc.message, exc.status) from None
    except BatchVisionError as exc:
        raise _exit(f"{exc.code.value}: {exc.message}", exit_status(exc.code)) from None
    except OSError as exc:
        raise _exit(one_line(exc), ExitStatus.IO) from None


def _exit(message: str, status: ExitStatus) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(int(status))
