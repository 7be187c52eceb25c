#!/usr/bin/env bash
# Installs what the OpenStack integration tier runs: MariaDB and RabbitMQ from Debian (never
# started as system services) and the OpenStack 2026.1 services from PyPI in a venv of their
# own, pinned by requirements.txt and upper-constraints.txt. A venv built from the same pins
# is reused as it is.
#
#   tests/integration/openstack/install.sh        (root, for apt-get)
#
# Environment: VANTAGE_OS_VENV (default /opt/vantage-openstack/venv), PYTHON (default python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${VANTAGE_OS_VENV:-/opt/vantage-openstack/venv}"
python="${PYTHON:-python3}"

log() { printf '[openstack install %s] %s\n' "$(date +%T)" "$*"; }

"$python" -c 'import venv' || { log "no usable Python at PYTHON=$python"; exit 1; }

# -- Debian packages ---------------------------------------------------------------------------
packages=(mariadb-server rabbitmq-server)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # up.sh starts its own MariaDB and RabbitMQ: keep the packages from starting system ones
    own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        own_policy=1
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
fi

# -- the services' venv ------------------------------------------------------------------------
# the stamp names everything the venv was built from; the same stamp means nothing to do
stamp_now="$(cat "$here/requirements.txt" "$here/upper-constraints.txt" \
                 "$here"/ml2_bindall/setup.cfg "$here"/ml2_bindall/vantage_test_ml2/*.py \
             | sha256sum | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version.split()[0])')"
if [ -f "$venv/.vantage-stamp" ] && [ "$(cat "$venv/.vantage-stamp")" = "$stamp_now" ]; then
    log "venv $venv is up to date"
    exit 0
fi
log "building venv $venv"
rm -rf "$venv"
"$python" -m venv "$venv"
# quiet, but for errors (a local index without a package is no error)
pip_q() {
    "$venv/bin/pip" install -q "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}
pip_q --upgrade pip setuptools wheel
# the machine-wide pip constraints (if any) still apply; upper-constraints pins everything else
pip_q -c "$here/upper-constraints.txt" -r "$here/requirements.txt"
pip_q --no-deps --no-build-isolation "$here/ml2_bindall"
rm -rf "$here/ml2_bindall/build" "$here"/ml2_bindall/*.egg-info
echo "$stamp_now" >"$venv/.vantage-stamp"
log "venv ready: $(du -sh "$venv" | cut -f1)"
