"""A fresh machine: Nix without build users, the example image not yet in the store.

Debian's nix-bin is single-user: no daemon and no `nixbld` group, while its nix.conf
still names that group, so every build as root fails until Nix is told to build as the
calling user. A machine where the group exists (or where the image already sits in the
store) hides that; these tests make the condition on any machine by naming a group that
does not exist, which is what Nix sees on a fresh one.
"""

from __future__ import annotations

import os
import platform
import subprocess

import pytest

from nixos_azure_publish import nix
from tests.conftest import REPO, require_tool
from tests.helpers.nix import example_env, nix_config, run_example

MISSING_GROUP = "nixos-azure-publish-no-such-group"
FRESH = f"build-users-group = {MISSING_GROUP}"


pytestmark = pytest.mark.usefixtures("nix_env")


def test_the_settings_build_as_the_caller_only_where_the_group_is_missing():
    assert "build-users-group =\n" in nix_config(FRESH)
    assert "build-users-group" not in nix_config("build-users-group = root")
    assert "build-users-group" not in nix_config("build-users-group =")
    for caller in (FRESH, "build-users-group = root"):
        assert "substituters =\n" in nix_config(caller)


def test_a_build_without_build_users_fails_with_a_hint_and_passes_with_the_settings(
    fixture_flake, monkeypatch
):
    ref = fixture_flake("publish")
    monkeypatch.setenv("NIX_CONFIG", "experimental-features = nix-command flakes\n" + FRESH)
    with pytest.raises(nix.NixBuildError) as info:
        nix.build(f"{ref}#azurePublish.default.image")
    assert f"the group '{MISSING_GROUP}' specified in 'build-users-group' does not exist" in str(
        info.value
    )
    assert "NIX_CONFIG='build-users-group ='" in (info.value.hint or "")
    monkeypatch.setenv("NIX_CONFIG", FRESH + "\n" + nix_config(FRESH))
    built = nix.build(f"{ref}#azurePublish.default.image")
    assert list(built.glob("*.vhd"))


def test_the_main_job_works_on_a_fresh_machine(tmp_path):
    target = "example-aarch64" if platform.machine() in {"aarch64", "arm64"} else "example"
    env = example_env(tmp_path)
    env["NIX_CONFIG"] = FRESH
    # The example image must really be built: delete it from the store when it is there.
    image = subprocess.run(
        [
            *nix.command_line(["eval", "--raw"]),
            f"./examples/flake#azurePublish.{target}.image.outPath",
        ],
        cwd=REPO,
        env={**env, "NIX_CONFIG": FRESH + "\n" + nix_config(FRESH)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if os.path.exists(image):  # noqa: PTH110 - a store path, not ours
        subprocess.run(
            [require_tool("nix-store"), "--delete", image],
            env={**env, "NIX_CONFIG": FRESH + "\n" + nix_config(FRESH)},
            capture_output=True,
            check=False,
        )
    deleted = not os.path.exists(image)  # noqa: PTH110 - a store path, not ours
    report = run_example(env)
    if deleted:  # else another process held it: built before, still a valid run
        assert os.path.exists(image)  # noqa: PTH110
    assert report["status"] == "published"
