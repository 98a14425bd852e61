"""``nixos-azure-publish role-definition``: the least-privilege custom role, as JSON."""

from __future__ import annotations

import json
import os

import click

from nixos_azure_publish.azure import role
from nixos_azure_publish.cli.params import flag, shown
from nixos_azure_publish.errors import UsageError

SUBSCRIPTION_ENV = "AZURE_SUBSCRIPTION_ID"


@click.command("role-definition")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help=f"Assignable scope, repeatable (default /subscriptions/${SUBSCRIPTION_ENV}).",
)
@flag("--smoke-test", help="Also the rights the smoke test's VM needs.")
@flag(
    "--import",
    "import_",
    help="Also the rights `import` reads community gallery sources with.",
)
@shown("--name", type=str, default=role.DEFAULT_NAME, help="The role's name.")
def role_definition_command(
    *, scopes: tuple[str, ...], smoke_test: bool, import_: bool, name: str
) -> None:
    """Print a custom role with exactly the actions the tool uses (no wildcards).

    Ready for `az role definition create --role-definition @role.json`; assign it
    to the identity that publishes, at the resource group or subscription.

    \b
    Example:
      nixos-azure-publish role-definition --smoke-test > role.json
    """
    chosen = list(scopes)
    if not chosen:
        subscription = os.environ.get(SUBSCRIPTION_ENV)
        if not subscription:
            raise UsageError(
                "no scope for the role",
                hint=f"Pass --scope /subscriptions/<id> or export {SUBSCRIPTION_ENV}",
            )
        chosen = [f"/subscriptions/{subscription}"]
    definition = role.role_definition(
        scopes=chosen, smoke_test=smoke_test, import_=import_, name=name
    )
    click.echo(json.dumps(definition, indent=2))
