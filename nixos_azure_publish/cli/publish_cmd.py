"""``nixos-azure-publish publish``: the whole pipeline, from a target to a replicated version."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nixos_azure_publish.cli.app import app_context
from nixos_azure_publish.cli.params import (
    IMAGE,
    dry_run_option,
    flag,
    state_dir_option,
    target_selection,
)
from nixos_azure_publish.errors import PublishError, UsageError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from nixos_azure_publish.azure.clients import AzureClients
    from nixos_azure_publish.pipeline import PublishInput, PublishOptions
    from nixos_azure_publish.report import PublishReport, RunReport
    from nixos_azure_publish.selection import TargetSelection

log = logging.getLogger(__name__)

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


@click.command("publish")
@target_selection
@click.option(
    "--image",
    type=IMAGE,
    help="Publish this VHD (or store path holding one) instead of the target's image.",
)
@dry_run_option("Show what exists and what would be created; change nothing in Azure.")
@flag(
    "--emulator",
    help="Publish into the bundled Azure emulator (no Azure account needed): the running one"
    " whose variables are exported (`emulator serve`), else one started for this run.",
)
@click.option(
    "--summary",
    "summary_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help=f"Append a Markdown summary to this file (default ${SUMMARY_ENV} when set).",
)
@flag(
    "--remove-unlisted-regions",
    help="Remove the replicas of a published version in regions the target no longer lists"
    " (kept by default: deployments may use them).",
)
@state_dir_option
def publish_command(*, selection: TargetSelection, emulator: bool, **asked: Any) -> None:  # noqa: ANN401
    """Build, upload and publish an image as a replicated gallery image version.

    Idempotent: a rerun after a crash or Ctrl-C continues where it stopped, and a
    rerun after success changes nothing and says "already published".

    Several targets (--target twice or more, --all-targets, --config twice or
    more) are published concurrently, an image they share is uploaded once, and
    one report lists them all; the exit code is the worst of theirs.

    \b
    Examples:
      nixos-azure-publish publish --flake . --target default
      nixos-azure-publish publish --config target.json --image result/ --dry-run
      nixos-azure-publish --json publish --flake . --emulator
      nixos-azure-publish publish --flake . --target gen1 --target gen2
      nixos-azure-publish publish --flake . --all-targets --jobs 2
    """
    selection.check()
    # The other options are the same for each publish of the run.
    each = _Asked(**asked)
    with _emulator_environ(enabled=emulator) as environ, _sigterm_interrupts():
        if selection.several:
            _publish_several(selection, each, environ)
            return
        config_file = selection.configs[0] if selection.configs else None
        target_name = selection.targets[0] if selection.targets else "default"
        publish = _load(config_file, selection.flake, target_name, each.image, environ)
        report = _publish(publish, each, environ)
    _write_summary(report, each.summary_file)
    app_context().emit(report.to_json(), report.to_console().rstrip("\n"))


@dataclass(frozen=True)
class _Asked:
    """What the command line asks of each publish, one target or several."""

    image: Path | None
    dry_run: bool
    summary_file: Path | None
    remove_unlisted_regions: bool
    state_dir: Path | None

    def options(self) -> PublishOptions:
        from nixos_azure_publish.pipeline import PublishOptions  # noqa: PLC0415
        from nixos_azure_publish.upload.progress import LogProgress  # noqa: PLC0415

        return PublishOptions(
            state_dir=self.state_dir,
            progress=LogProgress(),
            remove_unlisted_regions=self.remove_unlisted_regions,
        )


def _publish_several(selection: TargetSelection, asked: _Asked, environ: Mapping[str, str]) -> None:
    from nixos_azure_publish.azure.clients import AzureSettings, make_clients  # noqa: PLC0415
    from nixos_azure_publish.pipeline.multi import publish_many  # noqa: PLC0415

    clients: dict[str | None, AzureClients] = {}

    def clients_for(publish: PublishInput) -> AzureClients:
        # One set of clients per subscription (the SDK clients are thread-safe).
        key = publish.target.subscription_id
        if key not in clients:
            settings = AzureSettings.from_environ(subscription_id=key, environ=environ)
            clients[key] = make_clients(settings)
        return clients[key]

    def options_for(publish: PublishInput) -> PublishOptions:
        del publish
        return asked.options()

    run = publish_many(
        selection.sources(),
        image=asked.image,
        environ=environ,
        clients_for=clients_for,
        options_for=options_for,
        jobs=selection.jobs,
        dry_run=asked.dry_run,
    )
    _write_summary(run, asked.summary_file)
    context = app_context()
    context.emit(run.to_json(), run.to_console().rstrip("\n"))
    if run.exit_code:
        failed = [
            f"{t.target} ({t.status})" for t in run.targets if t.status in {"failed", "interrupted"}
        ]
        click.echo(
            f"error: {len(failed)} of {len(run.targets)} targets did not publish:"
            f" {', '.join(failed)}; exit code {run.exit_code} is the worst of theirs",
            err=True,
        )
        click.get_current_context().exit(run.exit_code)


def _load(
    config_file: Path | None,
    flake: str | None,
    target_name: str,
    image: Path | None,
    environ: Mapping[str, str],
) -> PublishInput:
    from nixos_azure_publish.pipeline import source  # noqa: PLC0415 - loads nix helpers

    if flake is not None:
        return source.from_flake(flake, target_name, image=image, environ=environ)
    assert config_file is not None  # noqa: S101 - checked by the caller
    return source.from_target_file(config_file, image=image, environ=environ)


def _publish(publish: PublishInput, asked: _Asked, environ: Mapping[str, str]) -> PublishReport:
    from nixos_azure_publish.azure.clients import AzureSettings, make_clients  # noqa: PLC0415
    from nixos_azure_publish.pipeline import Pipeline  # noqa: PLC0415

    settings = AzureSettings.from_environ(
        subscription_id=publish.target.subscription_id, environ=environ
    )
    pipeline = Pipeline(publish, clients=make_clients(settings), options=asked.options())
    if asked.dry_run:
        return pipeline.plan()
    try:
        return pipeline.run()
    except PublishError:
        # CI shows the summary of a failed or interrupted publish too: what it got done.
        with contextlib.suppress(UsageError):
            _write_summary(pipeline.report, asked.summary_file)
        raise


def _write_summary(report: PublishReport | RunReport, summary_file: Path | None) -> None:
    target = summary_file
    if target is None and os.environ.get(SUMMARY_ENV):
        target = Path(os.environ[SUMMARY_ENV])
    if target is None:
        return
    try:
        with target.open("a", encoding="utf-8") as handle:
            handle.write(report.to_markdown())
    except OSError as error:
        raise UsageError(
            f"cannot write the summary to {target}: {error.strerror or error}",
            hint="Check the --summary path",
        ) from None


@contextlib.contextmanager
def _emulator_environ(*, enabled: bool) -> Iterator[dict[str, str]]:
    """The environment the command runs with; with --emulator, the emulator's too."""
    environ = dict(os.environ)
    if not enabled:
        yield environ
        return
    from nixos_azure_publish.azure.clients import ENV_EMULATOR, ENV_ENDPOINT  # noqa: PLC0415

    if environ.get(ENV_ENDPOINT) and environ.get(ENV_EMULATOR) == "1":
        # `eval "$(emulator serve --detach)"` exported a running emulator: publish into it,
        # so that a rerun meets what the first run made.
        app_context().note(f"using the running emulator at {environ[ENV_ENDPOINT]}")
        yield environ
        return
    from nixos_azure_publish.emulator.server import run_emulator  # noqa: PLC0415

    app_context().note("starting the bundled Azure emulator")
    with run_emulator() as emulator:
        environ.update(emulator.environ)
        log.info("emulator at %s", emulator.endpoint)
        yield environ


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C: cleanup (revoke) runs, exit code 130."""

    def _raise(signum: int, frame: Any) -> None:  # noqa: ANN401, ARG001
        raise KeyboardInterrupt

    if sys.platform == "win32":  # pragma: no cover
        yield
        return
    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread (tests calling the command in a thread)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
