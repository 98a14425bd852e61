"""The one subprocess boundary to Nix: evaluate to JSON, build, read flake metadata.

Every ``nix`` invocation of the package goes through :func:`run_nix`, which logs
the command line, streams build logs at debug level (``-v``), and turns a
failure into a :class:`NixError` carrying the tail of stderr and the exact
command to rerun. The commands stay compatible with Nix 2.8 (no
``--print-out-paths``; ``nix build --json --no-link`` instead).
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import re
import shlex
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, cast

from nixos_azure_publish.errors import NixError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)

# Flakes and the nix command are experimental on older Nix; harmless on newer ones.
EXPERIMENTAL: Final = ("--extra-experimental-features", "nix-command flakes")
# Lines of stderr kept for error messages.
TAIL_LINES: Final = 20
# Without -v, a build still says what it is doing every this many seconds.
PROGRESS_SECONDS: Final = 30.0

_MISSING_ATTRIBUTE = re.compile(r"does not provide attribute|attribute '[^']*' missing")
_ERROR_LINE = re.compile(r"^error:")
# Nix colours its messages (and a builder's log may carry colours too): none reach ours.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
# A single-user Nix (Debian's nix-bin) has no build users, yet may name their group.
_NO_BUILD_USERS = re.compile(r"the group '([^']*)' specified in 'build-users-group' does not exist")
# NIX_CONFIG settings whose values are secrets (access-tokens = github.com=ghp_...).
_SECRET_SETTING = re.compile(
    r"^(\s*[\w-]*(?:token|password|secret)[\w-]*\s*=).*$", re.IGNORECASE | re.MULTILINE
)


class NixCommandError(NixError):
    """A ``nix`` command exited non-zero."""

    def __init__(
        self,
        message: str,
        *,
        hint: str,
        command: Sequence[str],
        returncode: int,
        stderr_tail: str,
        details: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, details=details)
        self.command = list(command)
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class NixAttributeMissingError(NixCommandError):
    """The installable names a flake attribute that does not exist."""


class NixEvalError(NixCommandError):
    """Evaluating a Nix expression failed (``throw``, ``assert``, type errors, ...)."""


class NixBuildError(NixCommandError):
    """A derivation failed to build."""


DEFAULT_STORE_DIR: Final = "/nix/store"
_STORE_NAME: Final = re.compile(r"([0-9a-df-np-sv-z]{32})-[^/]+")
"""A store path's name: 32 characters of Nix's base-32 alphabet (its hash), a dash, a name."""


def store_path_of(path: Path | str, *, environ: Mapping[str, str] | None = None) -> str | None:
    """The top-level store path (``<store>/<hash>-<name>``) that holds *path*, or None.

    The store is ``NIX_STORE_DIR`` (default ``/nix/store``). *path* is taken as
    given and, when that is outside the store, with its symlinks resolved (a
    ``result`` link, a path into a copy of the image).
    """
    env = os.environ if environ is None else environ
    store = env.get("NIX_STORE_DIR", DEFAULT_STORE_DIR).rstrip("/")
    candidates = [str(path)]
    if not candidates[0].startswith(store + "/") and Path(path).exists():
        candidates.append(str(Path(path).resolve()))
    for text in candidates:
        if text.startswith(store + "/"):
            name = text[len(store) + 1 :].split("/", 1)[0]
            if name:
                return f"{store}/{name}"
    return None


def store_hash(store_path: str) -> str | None:
    """The hash in a top-level store path's name, or None when the name has none."""
    match = _STORE_NAME.fullmatch(store_path.rstrip("/").rsplit("/", 1)[-1])
    return match.group(1) if match else None


def nix_executable(environ: Mapping[str, str] | None = None) -> str:
    """The ``nix`` to run: ``$NIXOS_AZURE_PUBLISH_NIX`` if set, else ``nix`` from ``PATH``."""
    env = os.environ if environ is None else environ
    return env.get("NIXOS_AZURE_PUBLISH_NIX") or "nix"


def command_line(args: Sequence[str]) -> list[str]:
    """The full argv of ``nix <args>``, experimental features enabled."""
    return [nix_executable(), *EXPERIMENTAL, *args]


def strip_ansi(text: str) -> str:
    """*text* without terminal colour and control sequences."""
    return _ANSI.sub("", text)


def _shell_quote(value: str) -> str:
    """*value* quoted for bash, on one line (``$'...'`` when it holds newlines)."""
    if "\n" not in value:
        return shlex.quote(value)
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"$'{escaped}'"


def rerun_command(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> str:
    """The command line that reruns *argv* as it ran: with its ``NIX_CONFIG``, secrets left out."""
    env = os.environ if environ is None else environ
    line = shlex.join(argv)
    settings = env.get("NIX_CONFIG")
    if not settings:
        return line
    settings = _SECRET_SETTING.sub(r"\1 REDACTED", settings)
    return f"NIX_CONFIG={_shell_quote(settings)} {line}"


def _hint(text: str, rerun: str) -> str:
    """What to do about a failed Nix command whose stderr ends with *text*."""
    rerun_it = f"Rerun it to see everything: {rerun} --show-trace -L"
    no_users = _NO_BUILD_USERS.search(text)
    if no_users:
        return (
            f"This Nix builds as the users of group {no_users.group(1)!r}, which does not exist"
            " (a single-user Nix, such as Debian's nix-bin, has no build users): run with"
            " NIX_CONFIG='build-users-group =' added to build as the calling user, or create the"
            " group and its build users as Nix's multi-user installer does. " + rerun_it
        )
    return rerun_it


def _tail(lines: collections.deque[str]) -> str:
    return "\n".join(line.rstrip() for line in lines).strip()


def _summary(tail: str) -> tuple[str, str]:
    """The first ``error:`` line of *tail* (else its last line) and the lines that belong to it."""
    lines = tail.splitlines()
    for i, line in enumerate(lines):
        if _ERROR_LINE.match(line):
            # Nix indents the continuation lines of one error (e.g. a builder's log tail).
            block = [
                more.strip()
                for more in itertools.takewhile(lambda more: more.startswith(" "), lines[i + 1 :])
                if "--show-trace" not in more
            ]
            return _ERROR_LINE.sub("", line).strip().rstrip(";:"), "\n".join(block)
    return (lines[-1] if lines else "(no output on stderr)"), ""


def _read_all(stream: IO[bytes], into: list[bytes]) -> None:
    into.append(stream.read())


def _log_stderr(stream: IO[bytes], tail: collections.deque[str]) -> None:
    for raw in stream:
        line = strip_ansi(raw.decode("utf-8", "replace").rstrip("\n"))
        tail.append(line)
        if line.startswith(("building '", "copying path")):
            log.info("nix: %s", line)
        else:
            log.debug("nix: %s", line)


def _spawn(argv: list[str], what: str) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except FileNotFoundError:
        raise NixError(
            f"cannot {what}: the `{argv[0]}` command was not found",
            hint=(
                "Install Nix 2.8 or newer (https://nixos.org/download) and put `nix` on PATH,"
                " or skip Nix with --config FILE --image PATH"
            ),
        ) from None
    except PermissionError:
        raise NixError(
            f"cannot {what}: `{argv[0]}` is not executable",
            hint="Check the Nix installation (or $NIXOS_AZURE_PUBLISH_NIX)",
        ) from None


def _wait(proc: subprocess.Popen[bytes], what: str) -> int:
    """Wait for *proc*, saying every so often that it still runs; never leave it behind."""
    started = time.monotonic()
    try:
        while True:
            try:
                return proc.wait(timeout=PROGRESS_SECONDS)
            except subprocess.TimeoutExpired:
                log.info("still running after %.0f s: %s", time.monotonic() - started, what)
    finally:
        if proc.poll() is None:  # interrupted: do not leave nix running behind us
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_nix(
    args: Sequence[str], *, what: str, kind: type[NixCommandError] = NixCommandError
) -> str:
    """Run ``nix <args>`` and return its stdout; raise a :class:`NixError` on failure.

    *what* says in words what the command does ("evaluate ...", "build ..."),
    for log lines and error messages. Stderr lines are logged at debug level as
    they arrive (``-v`` shows them); lines that say what is being built are
    logged at info level, and a long command logs every 30 s that it still runs.
    """
    argv = command_line(args)
    rerun = rerun_command(argv)
    log.info("%s: %s", what, rerun)
    proc = _spawn(argv, what)
    out: list[bytes] = []
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    readers = [
        threading.Thread(target=_read_all, args=(cast("IO[bytes]", proc.stdout), out), daemon=True),
        threading.Thread(
            target=_log_stderr, args=(cast("IO[bytes]", proc.stderr), tail), daemon=True
        ),
    ]
    for reader in readers:
        reader.start()
    started = time.monotonic()
    returncode = _wait(proc, what)
    for reader in readers:
        reader.join(timeout=10)
    stdout = b"".join(out).decode("utf-8", "replace")
    log.debug("%s: exit %d after %.1f s", what, returncode, time.monotonic() - started)
    if returncode != 0:
        text = _tail(tail)
        summary, details = _summary(text)
        if _MISSING_ATTRIBUTE.search(text):
            kind = NixAttributeMissingError
        raise kind(
            f"cannot {what} (nix exited with {returncode}): {summary}",
            hint=_hint(text, rerun),
            details=details or None,
            command=argv,
            returncode=returncode,
            stderr_tail=text,
        )
    return stdout


def eval_json(installable: str, *, apply: str | None = None) -> Any:  # noqa: ANN401 - JSON
    """``nix eval --json [--apply EXPR] INSTALLABLE``, parsed.

    A derivation in the value turns into its output path (instantiated, not built).
    """
    args = ["eval", "--json"]
    if apply is not None:
        args += ["--apply", apply]
    args.append(installable)
    stdout = run_nix(args, what=f"evaluate {installable}", kind=NixEvalError)
    try:
        return json.loads(stdout)
    except json.JSONDecodeError as error:
        raise NixError(
            f"`nix eval --json {installable}` printed something that is not JSON: {error}",
            hint="Check that nothing in the expression prints to stdout (e.g. builtins.trace)",
        ) from None


def build(installable: str) -> Path:
    """``nix build --json --no-link INSTALLABLE``; the path of its ``out`` output.

    Nothing is linked into the working directory; the store path stays alive
    for as long as the garbage collector leaves it (the publish takes minutes).
    """
    args = ["build", "--json", "--no-link"]
    if log.isEnabledFor(logging.DEBUG):
        args.append("--print-build-logs")
    args.append(installable)
    stdout = run_nix(args, what=f"build {installable}", kind=NixBuildError)
    try:
        results = json.loads(stdout)
        outputs: dict[str, str] = results[0]["outputs"]
    except (json.JSONDecodeError, LookupError, TypeError):
        raise NixError(
            f"`nix build --json {installable}` gave an unexpected answer: {stdout[:200]!r}",
            hint="Use Nix 2.8 or newer",
        ) from None
    path = outputs.get("out") or next(iter(outputs.values()), None)
    if not path:
        raise NixError(
            f"`nix build {installable}` reported no output path",
            hint="The attribute must be a derivation with an `out` output",
        )
    log.info("built %s: %s", installable, path)
    return Path(path)


def flake_metadata(flake: str) -> dict[str, Any]:
    """``nix flake metadata --json FLAKE`` (the revision, the locked URL, ...)."""
    stdout = run_nix(
        ["flake", "metadata", "--json", flake], what=f"read the metadata of flake {flake}"
    )
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise NixError(
            f"`nix flake metadata --json {flake}` did not print a JSON object",
            hint="Use Nix 2.8 or newer",
        )
    return data
