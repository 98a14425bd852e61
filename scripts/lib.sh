# Shared by scripts/test and scripts/example: install what is missing, idempotently.
# shellcheck shell=bash

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Arguments are COMMAND:PACKAGE pairs: the Debian PACKAGE is installed only when
# COMMAND is not on PATH, so a tool that came from elsewhere (a Node.js from
# NodeSource, say) is used as it is. A bare PACKAGE is checked with dpkg.
ensure_debian_packages() {
  local missing=() want cmd pkg
  for want in "$@"; do
    cmd=${want%%:*}
    pkg=${want#*:}
    if [ "$cmd" != "$want" ]; then
      command -v "$cmd" >/dev/null 2>&1 && continue
    else
      dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" && continue
    fi
    missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing Debian packages: ${missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

ensure_venv() {
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    ensure_debian_packages python3-venv
  fi
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  # Reinstall only when the project metadata changed since the last install.
  if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
    touch .venv/.installed
  fi
}

ensure_npm_packages() {
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
  fi
}

# Run every Nix of this script (and of what it starts) offline, and make a single-user
# Nix without build users work: the settings of scripts/nix-config, after the caller's
# own NIX_CONFIG (later lines win).
use_offline_nix() {
  local settings
  settings=$(bash scripts/nix-config)
  NIX_CONFIG="${NIX_CONFIG:+$NIX_CONFIG$'\n'}$settings"
  export NIX_CONFIG
}
