"""The error hierarchy: every expected failure is a :class:`PublishError`.

Each class has its own documented exit code (see README "Exit codes"). The
message says what went wrong; the hint says what to do next. Both pass
through :func:`nixos_azure_publish.redact.redact` before they are shown.
``rerun_helps`` says whether running the same command again can succeed
(a network fault, an interruption) or whether something must change first (the
configuration, the image, what exists in Azure): hints never promise a resume
that cannot happen.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, ClassVar

from nixos_azure_publish.redact import redact

if TYPE_CHECKING:
    from collections.abc import Iterable


class ExitCode(IntEnum):
    """Process exit codes. Stable: scripts and CI depend on them."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    INVALID_IMAGE = 3
    AZURE = 4
    NIX = 5
    UPLOAD = 6
    SMOKE_TEST = 7
    INTERRUPTED = 130


# Several targets in one run exit with the worst of their codes. Worst first: a bug in this
# tool; an interrupted run (targets may not have been tried at all); what the user must
# change before anything can work (command line or configuration, Nix, the image); what
# Azure refused or failed; an upload a rerun resumes; an image that does not boot.
SEVERITY: tuple[ExitCode, ...] = (
    ExitCode.INTERNAL,
    ExitCode.INTERRUPTED,
    ExitCode.USAGE,
    ExitCode.NIX,
    ExitCode.INVALID_IMAGE,
    ExitCode.AZURE,
    ExitCode.UPLOAD,
    ExitCode.SMOKE_TEST,
    ExitCode.OK,
)


def worst_exit_code(codes: Iterable[ExitCode | int]) -> ExitCode:
    """The exit code of several targets' results: the worst by :data:`SEVERITY` (OK if none)."""
    worst = ExitCode.OK
    for code in codes:
        known = ExitCode(code) if code in set(ExitCode) else ExitCode.INTERNAL
        if SEVERITY.index(known) < SEVERITY.index(worst):
            worst = known
    return worst


class PublishError(Exception):
    """Base of every expected failure. Rendered as one line, never a traceback."""

    exit_code: ClassVar[ExitCode] = ExitCode.INTERNAL
    kind: ClassVar[str] = "error"
    # Whether the same command, run again unchanged, can succeed (the class's usual case).
    rerun_helps: bool = False

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        details: str | None = None,
        rerun_helps: bool | None = None,
    ) -> None:
        # The message and hint form the one line a user reads; details (a tool's own
        # output, such as a failed build's log tail) are shown indented below it.
        self.message = " ".join(redact(message).split())
        self.hint = " ".join(redact(hint).split()) if hint else None
        self.details = redact(details).strip("\n") if details else None
        if rerun_helps is not None:
            self.rerun_helps = rerun_helps
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.one_line()

    def one_line(self) -> str:
        """The message and the hint as one line, for the terminal and for logs."""
        if self.hint:
            return f"{self.message.rstrip('.;:')}. {self.hint}"
        return self.message


class InternalError(PublishError):
    """A broken invariant of this tool: a bug to report, not something the user did."""

    kind = "internal"
    exit_code = ExitCode.INTERNAL


class UsageError(PublishError):
    """The command line or the configuration is wrong; nothing was changed."""

    exit_code = ExitCode.USAGE
    kind = "usage"


class ConfigError(UsageError):
    """A publish target failed validation. Carries every problem with its field path."""

    kind = "config"

    def __init__(self, problems: list[str], *, source: str | None = None) -> None:
        self.problems = [redact(p) for p in problems]
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            message = f"{where}{self.problems[0]}"
            super().__init__(message, hint="Fix the configuration and run again")
            return
        # Several problems: the one line counts them, and each follows on a line of its own.
        super().__init__(
            f"{where}{len(self.problems)} problems",
            hint="Fix each one below and run again",
            details="\n".join(self.problems),
        )


class ImageError(PublishError):
    """The image file is missing, unreadable or not acceptable to Azure."""

    exit_code = ExitCode.INVALID_IMAGE
    kind = "image"


class AzureError(PublishError):
    """Azure (or the emulator) refused or failed a request.

    Whether a rerun helps depends on the answer: a refusal (4xx) comes again until its
    cause is fixed, a failure (5xx, a lost connection) may not; callers say which.
    """

    exit_code = ExitCode.AZURE
    kind = "azure"


class NixError(PublishError):
    """Evaluating or building with Nix failed, or Nix is not installed."""

    exit_code = ExitCode.NIX
    kind = "nix"


class UploadError(PublishError):
    """Writing the image into the disk's page blob failed; a rerun resumes it."""

    exit_code = ExitCode.UPLOAD
    kind = "upload"
    rerun_helps = True
    bytes_sent: int = 0
    """Image bytes the failed attempt had sent (the publish report counts them)."""


class SasExpiredError(UploadError):
    """The write SAS expired or was revoked; grant access again and resume."""

    kind = "sas-expired"


class SourceSasExpiredError(UploadError):
    """The read SAS of an import's source expired or was revoked: the same command cannot
    go on; run it with a new URL of the source, and the copy resumes."""

    kind = "source-sas-expired"
    rerun_helps = False


class SmokeTestError(PublishError):
    """The test VM did not boot to the expected serial console output."""

    exit_code = ExitCode.SMOKE_TEST
    kind = "smoke-test"


class Interrupted(PublishError):  # noqa: N818 - a condition, not a failure
    """The user interrupted the command (Ctrl-C or SIGTERM); cleanup has run."""

    exit_code = ExitCode.INTERRUPTED
    kind = "interrupted"
    rerun_helps = True
