#!/usr/bin/env bash
# Set-up for `make test` and `make demo`: Debian packages, then a virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
# fonts-noto-cjk: Chinese text in the browser pages' screenshots; nginx, redis-server, postgresql:
# the multi-process tests start their own instances; janus, janus-tools, coturn: the Janus media backend;
# docker-compose: validates docker-compose.yml offline (no engine runs).
DEB_PACKAGES=(openssl softhsm2 chromium fonts-noto-cjk nginx redis-server postgresql janus janus-tools coturn docker-compose)
command -v npm >/dev/null 2>&1 || DEB_PACKAGES+=(npm)  # the browser pages' packages come from npm

missing=()
for p in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}" \
        || { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; }
fi

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[dev]'

# The browser pages' front-end packages, from the npm registry, exactly as package-lock.json says.
(cd server/web && npm ci --no-audit --no-fund --loglevel=error)
