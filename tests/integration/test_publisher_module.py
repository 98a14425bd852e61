"""nixosModules.publisher evaluated by the real Nix against stubs of the nixpkgs modules it sets.

nixpkgs cannot be fetched here, so tests/fixtures/publisher-module holds a small
stand-in of nixpkgs' module system (lib.nix: undeclared options are errors,
mkIf/mkMerge/priorities, typed merges) and a stub of each nixpkgs module whose
options the publisher sets, named after the nixpkgs file it mirrors. The files
the module writes (worker script, post-build hook, targets file) are real files
in the store, read back here.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from nixos_azure_publish.hooks.targets import load_targets
from tests.conftest import REPO, require_tool

FIXTURE = REPO / "tests" / "fixtures" / "publisher-module"
NIX_CONFIG = "experimental-features = nix-command flakes\nsubstituters =\nbuild-users-group ="
SERVICE = "nixos-azure-publish-worker"
JOB = "nixos:release-25.05:azure.x86_64-linux"

FULL = f"""
{{
  services.hydra.enable = true;
  services.nixos-azure-publish = {{
    enable = true;
    credentials.environmentFile = "/run/secrets/nixos-azure-publish.env";
    hydra.enable = true;
    postBuildHook.enable = true;
    worker.maxAttempts = 3;
    targets.gen2 = {{
      configFile = "/etc/nixos-azure-publish/gen2.json";
      hydraJobs = [ "{JOB}" ];
    }};
    targets.mine = {{ flake = "github:example/images"; target = "azure"; }};
    targets.inline = {{
      settings = {{ name = "nixos-inline"; resourceGroup = "nixos-images"; }};
      hydraJobs = [ "images" "{JOB}" ];
    }};
  }};
}}
"""


def evaluate(tmp_path: Path, configuration: str) -> dict[str, Any]:
    """The module's effect on the stubbed options (see eval.nix), or the Nix error."""
    nix_instantiate = require_tool("nix-instantiate")
    case = tmp_path / "configuration.nix"
    case.write_text(textwrap.dedent(configuration))
    result = subprocess.run(
        [
            nix_instantiate,
            "--read-write-mode",  # builtins.toFile writes the module's files into the store
            "--eval",
            "--strict",
            "--json",
            str(FIXTURE / "eval.nix"),
            "--arg",
            "configuration",
            str(case),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"NIX_CONFIG": NIX_CONFIG, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    if result.returncode != 0:
        raise AssertionError(result.stderr)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def evaluation_error(tmp_path: Path, configuration: str) -> str:
    with pytest.raises(AssertionError) as info:
        evaluate(tmp_path, configuration)
    return str(info.value)


def test_the_worker_is_a_hardened_service_of_its_own_user(tmp_path):
    out = evaluate(tmp_path, FULL)
    assert out["failedAssertions"] == []
    service = out["services"][SERVICE]
    config = service["serviceConfig"]
    assert config["User"] == config["Group"] == "nixos-azure-publish"
    assert config["NoNewPrivileges"] is True
    assert config["ProtectSystem"] == "strict"
    assert config["ProtectHome"] is True
    assert config["StateDirectory"] == "nixos-azure-publish"
    assert config["ReadWritePaths"] == ["/var/spool/nixos-azure-publish"]
    assert config["CapabilityBoundingSet"] == ""
    assert config["KillMode"] == "mixed"
    assert "multi-user.target" in service["wantedBy"]
    user = out["users"]["nixos-azure-publish"]
    assert user["isSystemUser"] is True
    assert user["home"] == "/var/empty"
    assert user["createHome"] is False
    assert "nixos-azure-publish" in out["groups"]


def test_the_environment_file_is_a_systemd_credential_not_an_environment(tmp_path):
    out = evaluate(tmp_path, FULL)
    service = out["services"][SERVICE]
    assert service["serviceConfig"]["LoadCredential"] == [
        "azure.env:/run/secrets/nixos-azure-publish.env"
    ]
    assert "EnvironmentFile" not in service["serviceConfig"]
    assert not [v for v in service["environment"].values() if "secrets" in (v or "")]
    script = Path(service["serviceConfig"]["ExecStart"]).read_text()
    assert '. "$CREDENTIALS_DIRECTORY/azure.env"' in script
    exec_line = script.strip().splitlines()[-1]
    assert exec_line.startswith("exec /nix/store/")
    assert (
        "/bin/nixos-azure-publish 'worker' '--spool' '/var/spool/nixos-azure-publish'" in exec_line
    )
    assert "'--max-attempts' '3'" in exec_line


def test_hydra_gets_one_runcommand_per_job_pattern(tmp_path):
    out = evaluate(tmp_path, FULL)
    sections = re.findall(r"<runcommand>\n(.*?)</runcommand>", out["hydraConfig"], re.DOTALL)
    jobs = [re.search(r"job = (\S+)", s).group(1) for s in sections]  # type: ignore[union-attr]
    assert jobs == [JOB, "images"]
    for section in sections:
        command = re.search(r"command = (.+)", section).group(1)  # type: ignore[union-attr]
        assert command.split()[1:] == [
            "hydra-hook",
            "--spool",
            "/var/spool/nixos-azure-publish",
            "--targets",
            out["targetsFile"],
        ]
    # hydra-notify runs the command as hydra-queue-runner: it must be able to write the spool.
    assert out["users"]["hydra-queue-runner"]["extraGroups"] == ["nixos-azure-publish"]
    assert all(" 2770 nixos-azure-publish nixos-azure-publish " in r for r in out["tmpfiles"])


def test_the_post_build_hook_runs_the_light_hook_command(tmp_path):
    out = evaluate(tmp_path, FULL)
    hook = Path(out["nixSettings"]["post-build-hook"]).read_text()
    assert (
        hook.strip()
        .splitlines()[-1]
        .endswith(
            "/bin/nixos-azure-publish post-build-hook --spool '/var/spool/nixos-azure-publish'"
        )
    )


def test_the_targets_file_is_one_the_worker_accepts(tmp_path):
    out = evaluate(tmp_path, FULL)
    targets = {t.name: t for t in load_targets(Path(out["targetsFile"]))}
    assert set(targets) == {"gen2", "mine", "inline"}
    assert targets["gen2"].hydra_jobs == (JOB,)
    assert targets["mine"].flake == "github:example/images"
    assert targets["mine"].flake_target == "azure"
    inline = targets["inline"].config
    assert inline is not None
    assert json.loads(inline.read_text()) == {
        "name": "nixos-inline",
        "resourceGroup": "nixos-images",
    }


def test_hooks_off_leave_hydra_and_nix_alone(tmp_path):
    out = evaluate(
        tmp_path,
        """
        {
          services.nixos-azure-publish = {
            enable = true;
            credentials.managedIdentity.enable = true;
            credentials.managedIdentity.clientId = "11111111-2222-3333-4444-555555555555";
            targets.gen2.configFile = "/etc/gen2.json";
          };
        }
        """,
    )
    assert out["failedAssertions"] == []
    assert out["hydraConfig"] is None
    assert out["nixSettings"] == {}
    assert "hydra-queue-runner" not in out["users"]
    environment = out["services"][SERVICE]["environment"]
    assert environment["AZURE_CLIENT_ID"] == "11111111-2222-3333-4444-555555555555"
    assert "LoadCredential" not in out["services"][SERVICE]["serviceConfig"]


def test_disabled_it_changes_nothing(tmp_path):
    out = evaluate(tmp_path, "{ services.nixos-azure-publish.postBuildHook.enable = true; }")
    assert out["services"] == {}
    assert out["users"] == {}
    assert out["nixSettings"] == {}
    assert out["tmpfiles"] == []


@pytest.mark.parametrize(
    ("configuration", "message"),
    [
        (
            """{ services.nixos-azure-publish = { enable = true;
                 credentials.managedIdentity.enable = true;
                 targets.both = { configFile = "/a.json"; flake = "."; }; }; }""",
            "targets.both: set exactly one of configFile, settings and flake",
        ),
        (
            """{ services.nixos-azure-publish = { enable = true;
                 credentials.managedIdentity.enable = true;
                 hydra.enable = true; targets.a.configFile = "/a.json"; }; }""",
            "no target has hydraJobs",
        ),
        (
            """{ services.nixos-azure-publish = { enable = true;
                 targets.a.configFile = "/a.json"; }; }""",
            "set exactly one of managedIdentity.enable and environmentFile",
        ),
    ],
)
def test_mistakes_are_assertions_that_say_what_to_fix(tmp_path, configuration, message):
    out = evaluate(tmp_path, configuration)
    assert [m for m in out["failedAssertions"] if message in m]


def test_an_option_that_does_not_exist_is_an_error(tmp_path):
    error = evaluation_error(
        tmp_path, "{ services.nixos-azure-publish = { enable = true; hydraJobs = [ ]; }; }"
    )
    assert "The option `services.nixos-azure-publish.hydraJobs' does not exist" in error


def test_a_wrongly_typed_value_is_an_error(tmp_path):
    error = evaluation_error(
        tmp_path, "{ services.nixos-azure-publish = { enable = true; worker.maxAttempts = 0; }; }"
    )
    assert "services.nixos-azure-publish.worker.maxAttempts" in error
    assert "positive integer" in error


def test_every_option_is_documented_in_the_readme(tmp_path):
    out = evaluate(tmp_path, "{ }")
    readme = (REPO / "README.md").read_text()
    options = out["options"] | out["targetOptions"]
    assert len(options) > 15
    for path, description in options.items():
        assert description, f"{path} has no description"
        short = path.removeprefix("services.nixos-azure-publish.")
        assert f"`{short}`" in readme, f"{path} is not in the README"
