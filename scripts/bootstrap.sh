#!/usr/bin/env bash
# Install what `make test` / `make demo` need, and nothing that is already there.
# Idempotent and quiet when all is present. Runs as root on a fresh Debian (CI), or as a
# developer with the packages already installed (then apt is skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(gcc python3-dev libpcsclite-dev pcscd pcsc-tools vsmartcard-vpcd chromium systemd postgresql)
[ -n "${EXTRA_APT:-}" ] && APT_PACKAGES+=(${EXTRA_APT})

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: missing Debian packages: ${missing[*]} (run as root, or apt-get install them)" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Name only what is missing: naming an installed package would upgrade it.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.cumulus-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing cumulus-edge[test] into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi
