"""eval -> build -> locate -> config with the real Nix, on fixture flakes without inputs.

The fixture (tests/fixtures/flakes/publish) builds a 20 MiB sparse fixed VHD with
qemu-img, the command nixpkgs' Azure image uses; its targets are made with the
repository's own nix/lib.nix.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

from nixos_azure_publish import config, flake, nix
from nixos_azure_publish.errors import ConfigError, ImageError, NixError, PublishError
from tests.conftest import REPO, require_tool

MIB = 1024 * 1024


def test_nix_eval_json_of_a_target_loads_and_validates(publish_flake):
    data = nix.eval_json(f"{publish_flake}#azurePublish.default")
    assert data["image"].startswith("/nix/store/")
    assert data["hyperVGeneration"] == "V2"
    assert data["architecture"] == "x64"
    assert data["nixos"] == {
        "release": "25.05",
        "label": "azure-25.05.20250612.abc1234",
        "system": data["nixos"]["system"],
    }
    target = config.load_target(data, source=publish_flake)
    assert target.name == "fixture-gen2"
    assert [r.replicas for r in target.regions] == [1, 2]


def test_the_image_is_built_and_its_vhd_found(publish_flake):
    loaded = flake.load_flake_target(publish_flake)
    vhd = loaded.image_path
    assert vhd is not None
    assert vhd.name.startswith("nixos-image-azure-25.05-")
    assert vhd.suffix == ".vhd"
    assert loaded.store_path == str(vhd.parent)
    assert loaded.target.image == str(vhd)
    # A real fixed VHD: 20 MiB of disk and a 512-byte footer with the conectix cookie.
    assert vhd.stat().st_size == 20 * MIB + 512
    with vhd.open("rb") as f:
        f.seek(-512, 2)
        assert f.read(8) == b"conectix"
    assert loaded.target.hyper_v_generation == "V2"
    assert loaded.target.nixos.release == "25.05"
    assert loaded.flake_revision is None  # a path: flake has no revision


def test_derived_fields_follow_the_configuration(publish_flake):
    arm = flake.load_flake_target(publish_flake, "arm", build=False)
    assert (arm.target.architecture, arm.target.nixos.system) == ("Arm64", "aarch64-linux")
    gen1 = flake.load_flake_target(publish_flake, "gen.1", build=False)
    assert gen1.target.hyper_v_generation == "V1"
    assert gen1.target.security_type == "Standard"


def test_without_build_nothing_is_built(publish_flake):
    loaded = flake.load_flake_target(publish_flake, build=False)
    assert loaded.image_path is None
    assert loaded.store_path is not None
    assert not Path(loaded.store_path).exists()
    assert loaded.target.image == loaded.store_path


def test_image_option_skips_the_build(publish_flake, tmp_path):
    image = tmp_path / "given.vhd"
    image.write_bytes(b"\0" * 1024)
    # The target's own image would fail to build: it is never built.
    loaded = flake.load_flake_target(publish_flake, "broken-build", image=image)
    assert loaded.image_path == image
    assert loaded.target.image == str(image)
    assert loaded.store_path is None


def test_an_image_that_is_a_path_is_used_without_a_build(publish_flake):
    loaded = flake.load_flake_target(publish_flake, "path-image")
    assert loaded.image_path is not None
    assert loaded.image_path.name.endswith("-payload.txt")
    assert loaded.store_path == str(loaded.image_path)


@pytest.mark.parametrize(
    ("target", "option"),
    [("gen1-trusted", "imageDefinition.securityType"), ("arm-v1", "architecture")],
)
def test_mktarget_refuses_contradictions_during_evaluation(publish_flake, target, option):
    with pytest.raises(nix.NixEvalError) as info:
        flake.load_flake_target(publish_flake, target)
    assert f"lib.mkTarget: {option} = " in info.value.message
    assert 'virtualisation.azureImage.vmGeneration = "v1"' in info.value.message


@pytest.mark.parametrize(
    ("target", "option"),
    [("plain-gen1-trusted", "imageDefinition.securityType"), ("plain-arm-v1", "architecture")],
)
def test_the_config_model_refuses_the_same_contradictions_written_by_hand(
    publish_flake, target, option
):
    with pytest.raises(ConfigError) as info:
        flake.load_flake_target(publish_flake, target)
    assert info.value.problems[0].startswith(f"{option}: ")
    assert info.value.source == f"{publish_flake}#azurePublish.{target}"


def test_a_build_failure_shows_the_log_tail_and_the_command(publish_flake):
    with pytest.raises(nix.NixBuildError) as info:
        flake.load_flake_target(publish_flake, "broken-build")
    error = info.value
    assert "cannot build" in error.message
    assert "failed with exit code 3" in error.message
    # The message is one line; the builder's log tail comes as details below it.
    assert "\n" not in error.one_line()
    assert "the image build failed on purpose" in (error.details or "")
    assert f"build --json --no-link '{publish_flake}#azurePublish.broken-build.image'" in (
        error.hint or ""
    )
    # The command in the hint really reproduces the failure.
    rerun = subprocess.run(error.command, capture_output=True, text=True, check=False)
    assert rerun.returncode != 0
    assert "the image build failed on purpose" in rerun.stderr


def test_an_evaluation_error_names_the_problem(publish_flake):
    with pytest.raises(nix.NixEvalError) as info:
        flake.load_flake_target(publish_flake, "eval-error")
    assert "cannot evaluate" in info.value.message
    assert "this target does not evaluate" in info.value.message
    assert "--show-trace" in (info.value.hint or "")


def test_a_missing_attribute_inside_a_target_is_nix_s_error_not_a_missing_target(publish_flake):
    with pytest.raises(nix.NixCommandError) as info:
        flake.load_flake_target(publish_flake, "impure")
    assert "attribute 'currentSystem' missing" in info.value.message
    assert "no publish target" not in info.value.message


def test_a_missing_target_lists_the_targets_there_are(publish_flake):
    with pytest.raises(NixError) as info:
        flake.load_flake_target(publish_flake, "nope")
    assert not isinstance(info.value, nix.NixCommandError)
    assert "has no publish target 'nope'" in info.value.message
    assert "targets: arm, arm-v1, broken-build, default," in info.value.message


def test_a_flake_without_azure_publish_says_so(tmp_path, nix_env):
    (tmp_path / "flake.nix").write_text("{ outputs = { self }: { }; }\n", encoding="utf-8")
    with pytest.raises(NixError, match="has no `azurePublish` output"):
        flake.load_flake_target(f"path:{tmp_path}")


def test_an_output_without_a_vhd_is_an_image_error(publish_flake):
    with pytest.raises(ImageError, match=r"no \.vhd file in the image output .*disk\.img"):
        flake.load_flake_target(publish_flake, "no-vhd")


def test_an_output_with_two_vhds_is_an_image_error(publish_flake):
    with pytest.raises(ImageError, match=r"2 \.vhd files .*\(a\.vhd, b\.vhd\)"):
        flake.load_flake_target(publish_flake, "two-vhds")


def test_a_target_without_an_image_is_a_config_error(publish_flake):
    with pytest.raises(ConfigError, match="image: is not set"):
        flake.load_flake_target(publish_flake, "no-image")


def test_each_failure_has_its_own_error(publish_flake, monkeypatch):
    seen: dict[str, tuple[type[PublishError], str]] = {}
    for target in ("broken-build", "eval-error", "nope", "no-vhd", "two-vhds"):
        with pytest.raises(PublishError) as info:
            flake.load_flake_target(publish_flake, target)
        seen[target] = (type(info.value), info.value.message.split(":")[0])
    monkeypatch.setenv("NIXOS_AZURE_PUBLISH_NIX", "/nonexistent/nix")
    with pytest.raises(PublishError) as info:
        flake.load_flake_target(publish_flake)
    seen["no nix"] = (type(info.value), info.value.message.split(":")[0])
    assert len(set(seen.values())) == len(seen), seen


def test_the_publish_app_passes_its_flake_target_and_arguments(publish_flake, tmp_path):
    # The app's publisher is a stand-in that records its arguments (the real package
    # needs nixpkgs, which cannot be fetched here); mkPublishApp and `nix run` are real.
    record = tmp_path / "record"
    result = subprocess.run(
        [
            *nix.command_line(["run", f"{publish_flake}#publish", "--"]),
            "--dry-run",
            "--summary",
            "s.md",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PUBLISH_RECORD": str(record)},
    )
    assert result.returncode == 0, result.stderr
    lines = record.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "publish"
    assert lines[1] == "--flake"
    assert lines[2].startswith("path:/nix/store/")
    assert lines[3:] == ["--target", "default", "--dry-run", "--summary", "s.md", "revision="]
    # The flake reference the app hands over is one the publisher can load.
    loaded = flake.load_flake_target(lines[2], "default", build=False)
    assert loaded.target.name == "fixture-gen2"
    # Targets picked on the command line replace the app's own.
    for picked in (["--all-targets"], ["--target", "arm", "--target", "gen.1"]):
        subprocess.run(
            [*nix.command_line(["run", f"{publish_flake}#publish", "--"]), *picked],
            capture_output=True,
            check=True,
            env={**os.environ, "PUBLISH_RECORD": str(record)},
        )
        lines = record.read_text(encoding="utf-8").splitlines()
        assert lines[3:] == [*picked, "revision="]


def test_nix_run_publish_builds_and_publishes_into_the_emulator(publish_flake, tmp_path):
    # `nix run .#publish -- ...` end to end: the app made by lib.mkPublishApp runs this
    # checkout's publisher, which evaluates and builds the target with the real Nix and
    # publishes it into the bundled emulator (Azurite for the blob).
    summary = tmp_path / "summary.md"
    result = subprocess.run(
        [
            *nix.command_line(["run", f"{publish_flake}#publish-checkout", "--"]),
            "--emulator",
            "--summary",
            str(summary),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "published" in result.stdout
    text = summary.read_text(encoding="utf-8")
    assert "fixture_gallery" in text
    assert "nixos-image-azure-25.05-" in result.stderr  # the VHD found in the built output


def test_build_logs_stream_at_debug_level_only(publish_flake, caplog):
    def logged(text: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if text in r.getMessage()]

    with caplog.at_level(logging.DEBUG, logger="nixos_azure_publish"):
        flake.load_flake_target(publish_flake, "gen.1")
    assert logged("making the fixture image azure-image"), "no builder output with -v"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="nixos_azure_publish"), pytest.raises(ImageError):
        flake.load_flake_target(publish_flake, "no-vhd")
    assert logged("nix: building '/nix/store/")  # what is being built, also without -v
    assert not logged("making the fixture image")


def test_the_revision_of_a_git_flake_is_reported(publish_flake, tmp_path):
    git = require_tool("git")
    source = Path(publish_flake.removeprefix("path:"))
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    for args in (["init", "-q"], ["add", "-A"], [*identity, "commit", "-q", "-m", "fixture"]):
        subprocess.run([git, *args], cwd=source, check=True, capture_output=True)
    head = subprocess.run(
        [git, "rev-parse", "HEAD"], cwd=source, check=True, capture_output=True, text=True
    ).stdout.strip()
    loaded = flake.load_flake_target(f"git+file://{source}", "gen.1", build=False)
    assert loaded.flake_revision == head


def test_the_revision_handed_over_by_the_app_is_used(publish_flake):
    loaded = flake.load_flake_target(
        publish_flake, "gen.1", build=False, environ={flake.REVISION_ENV: "0123abc"}
    )
    assert loaded.flake_revision == "0123abc"


def test_a_destination_needs_neither_the_image_nor_its_evaluation(publish_flake):
    # What status, gc and import load: the target only, even one with no image at all.
    loaded = flake.load_flake_target(publish_flake, "no-image", build=False, need_image=False)
    assert loaded.image_path is None
    assert loaded.target.image is None
    default = flake.load_flake_target(publish_flake, build=False, need_image=False)
    assert default.target.name == "fixture-gen2"
    assert default.target.image is None  # not even evaluated
