# services.nixos-azure-publish: a worker that publishes images to Azure Compute Gallery,
# fed by Hydra's <runcommand> and by Nix's post-build-hook through a spool directory.
#
# Both hooks run synchronously in their caller (hydra-notify, the Nix build loop) and are
# delivered at least once, so they only enqueue a job file and return; the worker, a hardened
# systemd service, publishes each job in its own process, retries with backoff, and records
# the outcome in the spool (done/ and failed/ hold each job's report).
#
# This file takes the flake (for the default package) and returns the module:
#   nixosModules.publisher = import ./nix/modules/publisher.nix { inherit self; };
{
  self ? null,
}:
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    mkOption
    mkEnableOption
    mkIf
    mkMerge
    types
    ;

  cfg = config.services.nixos-azure-publish;
  system = pkgs.stdenv.hostPlatform.system;
  exe = "${cfg.package}/bin/nixos-azure-publish";
  stateDir = "/var/lib/nixos-azure-publish";

  # An option as most here are: its type, its default, and what it is for.
  option =
    type: default: description:
    mkOption { inherit type default description; };

  targetModule = {
    options = {
      configFile =
        option (types.nullOr types.path) null
          "A target file (JSON or TOML) to publish; its `image` is set per job.";
      settings =
        option (types.nullOr (types.attrsOf types.anything)) null
          "The target itself, as `lib.mkTarget` or a target file would give it (written to a JSON file).";
      flake =
        option (types.nullOr types.str) null "A flake reference whose `azurePublish.<target>` to publish."
        // {
          example = "github:example/images";
        };
      target = option types.str "default" "The target name under `azurePublish` of `flake`.";
      hydraJobs =
        option (types.listOf types.str) [ ]
          "Hydra jobs (`project:jobset:job`, `*` for a whole field) whose builds this target publishes."
        // {
          example = [ "nixos:release-25.05:azure.x86_64-linux" ];
        };
    };
  };

  entryOf =
    name: t:
    (
      if t.flake != null then
        { inherit (t) flake target; }
      else if t.settings != null then
        { config = "${pkgs.writeText "nixos-azure-publish-${name}.json" (builtins.toJSON t.settings)}"; }
      else
        { config = "${t.configFile}"; }
    )
    // lib.optionalAttrs (t.hydraJobs != [ ]) { inherit (t) hydraJobs; };

  targetsFile = pkgs.writeText "nixos-azure-publish-targets.json" (
    builtins.toJSON { targets = lib.mapAttrs entryOf cfg.targets; }
  );

  hydraPatterns = lib.unique (lib.concatLists (lib.mapAttrsToList (_: t: t.hydraJobs) cfg.targets));

  spoolDirs = [
    ""
    "/queue"
    "/running"
    "/done"
    "/failed"
    "/tmp"
    "/locks"
  ];

  credentialEnv =
    {
      NIXOS_AZURE_PUBLISH_SPOOL = cfg.spoolDir;
      NIXOS_AZURE_PUBLISH_TARGETS = "${targetsFile}";
      XDG_CACHE_HOME = "/var/cache/nixos-azure-publish";
    }
    // lib.optionalAttrs (cfg.subscriptionId != null) { AZURE_SUBSCRIPTION_ID = cfg.subscriptionId; }
    // lib.optionalAttrs (cfg.credentials.managedIdentity.clientId != null) {
      AZURE_CLIENT_ID = cfg.credentials.managedIdentity.clientId;
    };

  workerArgs = lib.escapeShellArgs [
    "worker"
    "--spool"
    cfg.spoolDir
    "--targets"
    "${targetsFile}"
    "--state-dir"
    stateDir
    "--max-attempts"
    (toString cfg.worker.maxAttempts)
    "--backoff"
    (toString cfg.worker.backoffSeconds)
  ];

  # The environment file arrives as a systemd credential: readable by this service only,
  # never in the Nix store and never in the unit's Environment.
  workerScript = pkgs.writeShellScript "nixos-azure-publish-worker" ''
    set -eu
    if [ -n "''${CREDENTIALS_DIRECTORY:-}" ] && [ -r "$CREDENTIALS_DIRECTORY/azure.env" ]; then
      set -a
      . "$CREDENTIALS_DIRECTORY/azure.env"
      set +a
    fi
    exec ${exe} ${workerArgs}
  '';

  postBuildHook = pkgs.writeShellScript "nixos-azure-publish-post-build-hook" ''
    exec ${exe} post-build-hook --spool ${lib.escapeShellArg cfg.spoolDir}
  '';
in
{
  options.services.nixos-azure-publish = {
    enable = mkEnableOption "the nixos-azure-publish worker, which publishes queued images to Azure";

    package = mkOption {
      type = types.package;
      default =
        if self != null then
          self.packages.${system}.default
        else
          throw "services.nixos-azure-publish.package must be set (no flake to take it from)";
      defaultText = "the nixos-azure-publish package of this flake";
      description = "The nixos-azure-publish package.";
    };

    targets =
      option (types.attrsOf (types.submodule targetModule)) { }
        "The targets the worker may publish, by name: each a `configFile`, `settings` or `flake`, and the Hydra jobs that feed it.";

    spoolDir =
      option types.str "/var/spool/nixos-azure-publish"
        "The spool directory: the hooks write jobs into it, the worker takes them out.";

    user =
      option types.str "nixos-azure-publish"
        "The system user the worker runs as (created, without a home).";

    group =
      option types.str "nixos-azure-publish"
        "The group that may write to the spool (Hydra's notifier joins it with `hydra.enable`).";

    subscriptionId =
      option (types.nullOr types.str) null
        "The Azure subscription, for targets that do not name one (`AZURE_SUBSCRIPTION_ID`).";

    credentials = {
      managedIdentity = {
        enable = mkEnableOption "the Azure VM's managed identity (no secret on the machine)";
        clientId =
          option (types.nullOr types.str) null
            "The client id of a user-assigned managed identity (`AZURE_CLIENT_ID`); null for the system-assigned one.";
      };
      environmentFile =
        option (types.nullOr types.str) null
          "A file of `AZURE_*` variables (e.g. a service principal's `AZURE_CLIENT_SECRET`), handed to the worker as a systemd credential; keep it out of the Nix store."
        // {
          example = "/run/secrets/nixos-azure-publish.env";
        };
    };

    worker = {
      maxAttempts = option types.ints.positive 5 "Attempts before a job is recorded as failed.";
      backoffSeconds =
        option types.ints.unsigned 60
          "Seconds before the first retry; doubles with each attempt, up to an hour.";
    };

    hydra.enable = mkEnableOption "Hydra's <runcommand> for every `hydraJobs` pattern, feeding the spool";

    postBuildHook.enable = mkEnableOption "Nix's post-build-hook, feeding the spool with every locally built output holding a .vhd";

    targetsFile = mkOption {
      type = types.package;
      readOnly = true;
      internal = true;
      default = targetsFile;
      description = "The generated targets file (for the hooks and for tests).";
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions =
        lib.mapAttrsToList (name: t: {
          assertion =
            lib.length (
              lib.filter (x: x != null) [
                t.configFile
                t.settings
                t.flake
              ]
            ) == 1;
          message = "services.nixos-azure-publish.targets.${name}: set exactly one of configFile, settings and flake";
        }) cfg.targets
        ++ [
          {
            assertion = cfg.credentials.managedIdentity.enable != (cfg.credentials.environmentFile != null);
            message = "services.nixos-azure-publish.credentials: set exactly one of managedIdentity.enable and environmentFile";
          }
          {
            assertion = cfg.hydra.enable -> hydraPatterns != [ ];
            message = "services.nixos-azure-publish.hydra.enable: no target has hydraJobs, so no Hydra build would be published";
          }
        ];

      users.users.${cfg.user} = {
        isSystemUser = true;
        group = cfg.group;
        description = "nixos-azure-publish worker";
        home = "/var/empty";
        createHome = false;
      };
      users.groups.${cfg.group} = { };

      # setgid directories: whatever a hook writes stays in the group the worker is in.
      systemd.tmpfiles.rules = map (d: "d ${cfg.spoolDir}${d} 2770 ${cfg.user} ${cfg.group} - -") spoolDirs;

      systemd.services.nixos-azure-publish-worker = {
        description = "nixos-azure-publish worker: publishes queued images to Azure";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [
          "network-online.target"
          "systemd-tmpfiles-setup.service"
        ];
        environment = credentialEnv;
        restartTriggers = [ targetsFile ];
        serviceConfig = {
          ExecStart = "${workerScript}";
          User = cfg.user;
          Group = cfg.group;
          StateDirectory = "nixos-azure-publish";
          StateDirectoryMode = "0700";
          CacheDirectory = "nixos-azure-publish";
          ReadWritePaths = [ cfg.spoolDir ];
          UMask = "0007";
          Restart = "on-failure";
          RestartSec = 10;
          # SIGTERM to the worker only: it interrupts its publish, which revokes access and
          # exits, and requeues the job; whatever is left is killed after the timeout.
          KillMode = "mixed";
          TimeoutStopSec = 120;
          NoNewPrivileges = true;
          ProtectSystem = "strict";
          ProtectHome = true;
          PrivateTmp = true;
          PrivateDevices = true;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectKernelLogs = true;
          ProtectControlGroups = true;
          ProtectClock = true;
          ProtectHostname = true;
          RestrictNamespaces = true;
          RestrictRealtime = true;
          RestrictSUIDSGID = true;
          LockPersonality = true;
          RestrictAddressFamilies = [
            "AF_UNIX"
            "AF_INET"
            "AF_INET6"
          ];
          SystemCallArchitectures = "native";
          CapabilityBoundingSet = "";
          AmbientCapabilities = "";
        }
        // lib.optionalAttrs (cfg.credentials.environmentFile != null) {
          LoadCredential = [ "azure.env:${cfg.credentials.environmentFile}" ];
        };
      };
    }

    (mkIf cfg.hydra.enable {
      # hydra-notify runs the command as hydra-queue-runner, which must write the spool.
      users.users.hydra-queue-runner.extraGroups = [ cfg.group ];
      services.hydra.extraConfig = lib.concatMapStringsSep "\n" (pattern: ''
        <runcommand>
          job = ${pattern}
          command = ${exe} hydra-hook --spool ${cfg.spoolDir} --targets ${targetsFile}
        </runcommand>
      '') hydraPatterns;
    })

    (mkIf cfg.postBuildHook.enable {
      nix.settings.post-build-hook = "${postBuildHook}";
    })
  ]);
}
