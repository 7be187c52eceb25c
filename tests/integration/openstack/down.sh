#!/usr/bin/env bash
# Stops the OpenStack test stack that up.sh started: exactly the processes recorded in
# $state/pids (a bring-up still in progress first, then the services in reverse order of
# their start). Keeps the state dir and its logs; `down.sh --purge` removes them too.
set -euo pipefail
# shellcheck source=tests/integration/openstack/lib.sh
source "$(dirname "$0")/lib.sh"

purge=""
[ "${1:-}" = "--purge" ] && purge=1

if [ -d "$pids" ]; then
    for name in up nova-compute nova-scheduler nova-conductor nova-api neutron glance \
                placement keystone rabbitmq epmd mariadb; do
        stop_recorded "$name"
    done
    # anything recorded under another name (none today) goes too
    for file in "$pids"/*.pid; do
        [ -e "$file" ] || continue
        name="$(basename "$file" .pid)"
        stop_recorded "$name"
    done
    [ "$(cat "$state/status" 2>/dev/null)" = failed ] || echo stopped >"$state/status"
    log "stopped the stack in $state"
fi
if [ -n "$purge" ]; then
    rm -rf "$state"
fi
