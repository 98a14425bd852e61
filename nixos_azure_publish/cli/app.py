"""The top-level click group: global options, logging, and error rendering.

Commands live in their own modules under ``cli/`` and hold no logic a
library user would need: they parse, call the library, and print.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import click

from nixos_azure_publish import __version__
from nixos_azure_publish.emulator.errors import EmulatorError
from nixos_azure_publish.errors import ExitCode, Interrupted, PublishError, UsageError
from nixos_azure_publish.redact import RedactingFilter, protect_third_party_logs, redact

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger("nixos_azure_publish")


@dataclass(frozen=True)
class AppContext:
    """Global options, available to every command as ``ctx.obj``."""

    json: bool
    verbose: int
    quiet: bool = False

    def note(self, text: str) -> None:
        """A line for the person at the terminal (stderr); ``-q`` leaves it out."""
        if not self.quiet:
            click.echo(text, err=True)

    def emit(self, data: object, human: str | None = None) -> None:
        """Print a result: JSON on stdout with ``--json``, else the human text."""
        if self.json:
            click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
        elif human is not None:
            click.echo(human)


def app_context() -> AppContext:
    """The :class:`AppContext` of the running command."""
    ctx = click.get_current_context()
    obj = ctx.find_object(AppContext)
    if obj is None:  # a command invoked on its own, as tests sometimes do
        return AppContext(json=False, verbose=0)
    return obj


def _global_flag(ctx: click.Context, param: click.Parameter, value: bool) -> None:  # noqa: FBT001
    """A command's own ``--json`` or ``--quiet``: the same as the global one."""
    if not value:
        return
    root = ctx.find_root()
    base = ctx.find_object(AppContext) or AppContext(json=False, verbose=0)
    # Errors are rendered by the group from the root context's object.
    ctx.obj = root.obj = dataclasses.replace(base, **{str(param.name): True})
    if param.name == "quiet":
        configure_logging(base.verbose, quiet=True)


def _common_options() -> list[click.Option]:
    # Fresh objects each time: click binds a parameter to one command.
    return [
        click.Option(
            ["--json"],
            is_flag=True,
            expose_value=False,
            callback=_global_flag,
            help="Print the result (or the error) as JSON on stdout, like the global --json.",
        ),
        click.Option(
            ["-q", "--quiet"],
            is_flag=True,
            expose_value=False,
            callback=_global_flag,
            help="Print only results and errors, like the global --quiet.",
        ),
    ]


def add_common_options(command: click.Command) -> click.Command:
    """Give *command* (and every command of a group) the global ``--json`` and ``--quiet``.

    The one implementation of those options after a command's name, so that
    ``tool --json publish`` and ``tool publish --json`` behave alike for every command.
    """
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_common_options(sub)
        return command
    have = {opt for p in command.params for opt in getattr(p, "opts", [])}
    command.params.extend(o for o in _common_options() if not set(o.opts) & have)
    return command


def configure_logging(verbose: int, *, quiet: bool = False) -> None:
    """Log lines on stderr, secrets redacted; ``-v`` for debug, ``-vv`` for the SDKs' HTTP too.

    ``quiet`` keeps only errors: results go to stdout, and failures are reported anyway.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_nixos_azure_publish", False):
            root.removeHandler(old)
    handler._nixos_azure_publish = True  # type: ignore[attr-defined]  # noqa: SLF001
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)  # noqa: PLR2004
    log.setLevel(logging.DEBUG if verbose >= 1 else logging.ERROR if quiet else logging.INFO)
    protect_third_party_logs()
    # The SDKs log every HTTP request at INFO; only -vv wants that. Their warnings (a
    # credential chain that found no login lists every credential it tried, 14 lines)
    # repeat what our one-line error says, so they need -v too.
    logging.getLogger("azure").setLevel(_sdk_level(verbose))


def _sdk_level(verbose: int) -> int:
    if verbose >= 2:  # noqa: PLR2004
        return logging.DEBUG
    return logging.WARNING if verbose == 1 else logging.CRITICAL


def _fail(ctx: click.Context, error: PublishError) -> NoReturn:
    obj = ctx.find_object(AppContext)
    if obj is not None and obj.verbose:
        click.echo(redact(traceback.format_exc()), err=True)
    if obj is not None and obj.json:
        click.echo(
            json.dumps(
                {
                    "error": {
                        "kind": error.kind,
                        "message": error.message,
                        "hint": error.hint,
                        "rerunHelps": error.rerun_helps,
                        "details": error.details,
                        "exitCode": int(error.exit_code),
                    }
                },
                indent=2,
            )
        )
    click.echo(f"error: {error.one_line()}", err=True)
    if error.details:
        click.echo("\n".join(f"  {line}" for line in error.details.splitlines()), err=True)
    ctx.exit(int(error.exit_code))


class PublishGroup(click.Group):
    """A group that turns expected errors into one line and a documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:  # noqa: ANN401 - click's own signature
        try:
            return super().invoke(ctx)
        except PublishError as error:
            _fail(ctx, error)
        except EmulatorError as error:
            # The emulator raises its own errors (it imports nothing from the tool).
            _fail(ctx, UsageError(error.message, hint=error.hint))
        except KeyboardInterrupt:
            _fail(ctx, Interrupted("interrupted", hint="Run the same command again to resume"))


@click.group(cls=PublishGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More output: -v debug logs, -vv SDK HTTP logs.")
@click.option(
    "--json",
    "json_output",
    is_flag=True,
    help="Machine-readable JSON on stdout; logs stay on stderr.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only results and errors.")
@click.version_option(__version__, "--version", prog_name="nixos-azure-publish")
@click.pass_context
def cli(ctx: click.Context, *, verbose: int, json_output: bool, quiet: bool) -> None:
    """Publish NixOS images to Azure Compute Gallery.

    Validates a publish target, builds its image with Nix, uploads it into a
    managed disk, and creates a replicated gallery image version, idempotently.

    \b
    Example:
      nixos-azure-publish publish --flake . --target default
      nixos-azure-publish --json publish --config target.json --dry-run
    """
    ctx.obj = AppContext(json=json_output, verbose=verbose, quiet=quiet)
    configure_logging(verbose, quiet=quiet)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this directly)."""
    try:
        # Without standalone mode click returns the exit code of ctx.exit(), or the
        # command's return value (commands return None).
        result = cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.ClickException as usage:
        usage.show()
        return usage.exit_code
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        return int(ExitCode.INTERRUPTED)
    return result if isinstance(result, int) else int(ExitCode.OK)
