"""`nixos-azure-publish build` on a fixture flake, through the real CLI and the real Nix."""

from __future__ import annotations

import json
from pathlib import Path

from nixos_azure_publish.cli import main


def test_build_command_prints_the_config_and_the_vhd(publish_flake, capsys):
    assert main(["--json", "build", "--flake", publish_flake, "--target", "default"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["image"].endswith(".vhd")
    assert Path(out["image"]).is_file()
    assert out["target"]["hyperVGeneration"] == "V2"
    assert out["target"]["imageDefinition"]["securityType"] == "TrustedLaunchSupported"
    assert out["storePath"] == str(Path(out["image"]).parent)


def test_build_command_failure_is_one_line_and_exit_code_5(publish_flake, capsys):
    assert main(["build", "--flake", publish_flake, "--target", "eval-error"]) == 5
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors[0].startswith(f"error: cannot evaluate {publish_flake}#azurePublish.eval-error")
    assert "this target does not evaluate" in err
    assert "Traceback" not in err
