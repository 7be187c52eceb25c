# Shared by up.sh and down.sh: where things are, which ports, and how a started process is
# recorded so that down.sh stops exactly the processes up.sh started.
# shellcheck shell=bash disable=SC2034

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${VANTAGE_OS_VENV:-/opt/vantage-openstack/venv}"
state="${VANTAGE_OS_STATE:-/tmp/vantage-openstack}"
logs="$state/logs"
pids="$state/pids"
etc="$state/etc"

# every listener is on 127.0.0.1; the API ports are the usual OpenStack ones
keystone_port="${VANTAGE_OS_KEYSTONE_PORT:-5000}"
placement_port="${VANTAGE_OS_PLACEMENT_PORT:-8778}"
glance_port="${VANTAGE_OS_GLANCE_PORT:-9292}"
neutron_port="${VANTAGE_OS_NEUTRON_PORT:-9696}"
nova_port="${VANTAGE_OS_NOVA_PORT:-8774}"
mysql_port="${VANTAGE_OS_MYSQL_PORT:-33306}"
amqp_port="${VANTAGE_OS_AMQP_PORT:-35672}"
erl_dist_port="${VANTAGE_OS_ERL_DIST_PORT:-35673}"
epmd_port="${VANTAGE_OS_EPMD_PORT:-34369}"

admin_password="${VANTAGE_OS_ADMIN_PASSWORD:-vantage-os-admin}"
user_password="${VANTAGE_OS_USER_PASSWORD:-vantage-os-user}"
compute_host="vantage-compute"

log() { printf '[openstack %s] %s\n' "$(date +%T)" "$*"; }

# the start time of a process in clock ticks since boot (field 22 of /proc/PID/stat): with the
# pid it names one process, so a recycled pid is never mistaken for ours
start_ticks() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    # shellcheck disable=SC2086
    set -- $stat
    echo "${20}"
}

# record PID as NAME; GROUP=1 when it leads a process group of its own (setsid), so down.sh
# stops its children (uwsgi workers, Erlang helpers) with it
record_pid() {
    local name="$1" pid="$2" group="${3:-1}"
    echo "$pid $(start_ticks "$pid") $group" >"$pids/$name.pid"
}

# is the process recorded as NAME still the one we started?
recorded_alive() {
    local file="$pids/$1.pid" pid ticks group
    [ -f "$file" ] || return 1
    read -r pid ticks group <"$file"
    [ -n "$pid" ] && [ "$(start_ticks "$pid")" = "$ticks" ]
}

# start a long-running service in a session of its own, output to logs/NAME.log
start_service() {
    local name="$1"
    shift
    setsid "$@" >>"$logs/$name.log" 2>&1 </dev/null &
    record_pid "$name" "$!" 1
}

# stop the process recorded as NAME (and its group when it has one); waits up to 15 s
stop_recorded() {
    local name="$1" file="$pids/$1.pid" pid ticks group target
    [ -f "$file" ] || return 0
    read -r pid ticks group <"$file"
    if [ -n "$pid" ] && [ "$(start_ticks "$pid")" = "$ticks" ]; then
        target="$pid"
        [ "$group" = 1 ] && target="-$pid"
        kill -TERM -- "$target" 2>/dev/null || true
        for _ in $(seq 150); do
            [ "$(start_ticks "$pid")" = "$ticks" ] || break
            sleep 0.1
        done
        if [ "$(start_ticks "$pid")" = "$ticks" ]; then
            kill -KILL -- "$target" 2>/dev/null || true
        fi
        # a group's other members (workers) may outlive their leader briefly
        if [ "$group" = 1 ]; then
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}
