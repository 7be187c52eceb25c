#!/usr/bin/env bash
# Brings up a real OpenStack control plane on 127.0.0.1 for the driver's integration tests:
# MariaDB and RabbitMQ started directly (no systemd) with their data under the state dir,
# Keystone, Placement, Glance, Neutron (ML2, no agents) and the Nova API under uwsgi, Nova's
# conductor, scheduler and compute (fake.FakeDriver); then an image, flavors, networks and a
# router for the tests, and a clouds.yaml describing it all.
#
#   up.sh [--install] [--background]
#
#   --install     run install.sh first (Debian packages, the services' venv)
#   --background  return at once; progress goes to $state/logs/up.log and $state/status
#                 becomes "ready" or "failed"
#
# State dir: $VANTAGE_OS_STATE (default /tmp/vantage-openstack): etc/ (configuration),
# logs/ (one file per process), pids/ (what down.sh stops), clouds.yaml and stack.json.
set -euo pipefail
# shellcheck source=tests/integration/openstack/lib.sh
source "$(dirname "$0")/lib.sh"

install=""
background=""
child=""
for arg in "$@"; do
    case "$arg" in
        --install) install=1 ;;
        --background) background=1 ;;
        --child) child=1 ;;  # internal: the detached half of --background
        *) echo "usage: $0 [--install] [--background]" >&2; exit 2 ;;
    esac
done

if [ -z "$child" ]; then
    if recorded_alive up; then
        log "a bring-up is already running (see $logs/up.log)"
        exit 0
    fi
    if [ "$(cat "$state/status" 2>/dev/null)" = ready ] && recorded_alive keystone; then
        log "already up: $state/clouds.yaml"
        exit 0
    fi
    # whatever an earlier run left: stop its processes, then start clean
    "$here/down.sh" >/dev/null 2>&1 || true
    rm -rf "$state"
    mkdir -p "$logs" "$pids" "$etc"
    echo starting >"$state/status"
    if [ -n "$background" ]; then
        setsid "$0" --child ${install:+--install} >>"$logs/up.log" 2>&1 </dev/null &
        record_pid up "$!" 1
        log "bring-up started in the background: $logs/up.log"
        exit 0
    fi
    record_pid up "$$" 0
fi

started_at=$SECONDS
finish() {
    local rc=$?
    if [ "$rc" = 0 ]; then
        echo ready >"$state/status"
        log "OpenStack is up in $((SECONDS - started_at)) s: $state/clouds.yaml"
    else
        echo failed >"$state/status"
        log "bring-up FAILED (exit $rc) after $((SECONDS - started_at)) s; logs in $logs"
        rm -f "$pids/up.pid"
        "$here/down.sh" || true  # what this run started; logs stay
    fi
    rm -f "$pids/up.pid"
}
trap finish EXIT

fail() {
    log "ERROR: $*"
    exit 1
}

# last lines of a log, for errors that would otherwise only say "see the log"
tail_log() { tail -n 40 "$logs/$1.log" 2>/dev/null | sed "s/^/    $1| /" >&2; }

# run a setup step with its output in logs/NAME.log; on failure show the tail
step() {
    local name="$1"
    shift
    if ! "$@" >>"$logs/$name.log" 2>&1; then
        tail_log "$name"
        fail "$name failed: $*"
    fi
}

if [ -n "$install" ]; then
    t=$SECONDS
    "$here/install.sh" || fail "install.sh failed (it needs root for apt-get and $venv)"
    log "install took $((SECONDS - t)) s"
fi
[ -x "$venv/bin/uwsgi" ] || fail "no services venv at $venv: run $here/install.sh"
command -v mariadbd >/dev/null || fail "mariadbd not found: run $here/install.sh"

py="$venv/bin/python"
port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
for port in "$keystone_port" "$placement_port" "$glance_port" "$neutron_port" "$nova_port" \
            "$mysql_port" "$amqp_port" "$erl_dist_port" "$epmd_port"; do
    port_free "$port" || fail "127.0.0.1:$port is in use (set VANTAGE_OS_*_PORT, see README.md)"
done

wait_port() {  # PORT SECONDS WHAT [PIDNAME]
    local deadline=$((SECONDS + $2))
    until ! port_free "$1"; do
        if [ -n "${4:-}" ] && ! recorded_alive "$4"; then
            tail_log "$4"
            fail "$3 exited before listening on 127.0.0.1:$1"
        fi
        [ $SECONDS -lt $deadline ] || { tail_log "${4:-up}"; fail "$3 not listening on 127.0.0.1:$1 after $2 s"; }
        sleep 0.3
    done
}

# -- configuration -----------------------------------------------------------------------------
sock="$state/mysql/mysqld.sock"
db() { echo "mysql+pymysql://root@localhost/$1?unix_socket=$sock&charset=utf8"; }
transport="rabbit://guest:guest@127.0.0.1:$amqp_port/"
identity="http://127.0.0.1:$keystone_port/v3"

# how every service logs in to Keystone (the bootstrap admin serves as the service user too)
service_auth() {
    cat <<EOF
auth_type = password
auth_url = $identity
username = admin
password = $admin_password
project_name = admin
user_domain_name = Default
project_domain_name = Default
region_name = RegionOne
EOF
}
authtoken() {
    echo "[keystone_authtoken]"
    echo "www_authenticate_uri = $identity"
    service_auth
    echo "service_token_roles_required = true"
}

mkdir -p "$state"/{mysql,rabbitmq,keystone,glance/images,glance/staging,glance/tasks,nova/instances,neutron,locks}

cat >"$etc/keystone.conf" <<EOF
[DEFAULT]
[database]
connection = $(db keystone)
[identity]
# the cheapest bcrypt: every service logs in often and this box has two cores
password_hash_rounds = 4
[token]
provider = fernet
expiration = 43200
[fernet_tokens]
key_repository = $state/keystone/fernet-keys
[fernet_receipts]
key_repository = $state/keystone/fernet-keys
[credential]
key_repository = $state/keystone/credential-keys
EOF

cat >"$etc/placement.conf" <<EOF
[DEFAULT]
[placement_database]
connection = $(db placement)
[api]
auth_strategy = keystone
$(authtoken)
EOF

cp "$venv/etc/glance/glance-api-paste.ini" "$etc/glance-api-paste.ini"
cat >"$etc/glance-api.conf" <<EOF
[DEFAULT]
enabled_backends = file:file
[database]
connection = $(db glance)
[glance_store]
default_backend = file
[file]
filesystem_store_datadir = $state/glance/images
[os_glance_staging_store]
filesystem_store_datadir = $state/glance/staging
[os_glance_tasks_store]
filesystem_store_datadir = $state/glance/tasks
[paste_deploy]
flavor = keystone
config_file = $etc/glance-api-paste.ini
[oslo_concurrency]
lock_path = $state/locks
$(authtoken)
EOF

mkdir -p "$etc/neutron/plugins/ml2"
cp "$venv/etc/neutron/api-paste.ini" "$etc/neutron/api-paste.ini"
cat >"$etc/neutron/neutron.conf" <<EOF
[DEFAULT]
core_plugin = ml2
service_plugins = router
auth_strategy = keystone
allow_overlapping_ips = true
transport_url = $transport
state_path = $state/neutron
api_paste_config = $etc/neutron/api-paste.ini
# no agents: nothing to notify, nothing to schedule on
dhcp_agent_notification = false
notify_nova_on_port_status_changes = true
notify_nova_on_port_data_changes = true
host = $compute_host
[database]
connection = $(db neutron)
[oslo_concurrency]
lock_path = $state/locks
[nova]
$(service_auth)
$(authtoken)
EOF
cat >"$etc/neutron/plugins/ml2/ml2_conf.ini" <<EOF
[ml2]
type_drivers = local,flat
tenant_network_types = local
# binds every port (vif_type ovs) without agents: ml2_bindall/ in this directory
mechanism_drivers = vantage_bind_all
extension_drivers = port_security
[ml2_type_flat]
flat_networks = public
EOF

cp "$venv/etc/nova/api-paste.ini" "$etc/api-paste.ini"
# nova-compute gets no database access (nova-cpu.conf): it talks through the conductor
nova_common="$(cat <<EOF
[DEFAULT]
host = $compute_host
my_ip = 127.0.0.1
state_path = $state/nova
instances_path = $state/nova/instances
transport_url = $transport
compute_driver = fake.FakeDriver
# no agent ever plugs a VIF: do not wait for Neutron's vif-plugged event
vif_plugging_timeout = 0
vif_plugging_is_fatal = false
[api]
auth_strategy = keystone
[wsgi]
api_paste_config = $etc/api-paste.ini
[conductor]
workers = 1
[scheduler]
workers = 1
[oslo_concurrency]
lock_path = $state/locks
[vnc]
enabled = false
[placement]
$(service_auth)
[neutron]
$(service_auth)
[glance]
region_name = RegionOne
$(authtoken)
EOF
)"
echo "$nova_common" >"$etc/nova-cpu.conf"
cat >"$etc/nova.conf" <<EOF
$nova_common
[api_database]
connection = $(db nova_api)
[database]
connection = $(db nova)
EOF

# one uwsgi per API, speaking HTTP itself on its 127.0.0.1 port (devstack's settings)
uwsgi_ini() {  # NAME PORT MODULE ENV
    cat >"$etc/uwsgi-$1.ini" <<EOF
[uwsgi]
http-socket = 127.0.0.1:$2
module = $3
home = $venv
env = $4
master = true
processes = 2
enable-threads = true
lazy-apps = true
need-app = true
die-on-term = true
exit-on-reload = false
thunder-lock = true
http-raw-body = true
http-chunked-input = true
http-auto-chunked = true
add-header = Connection: close
buffer-size = 65535
worker-reload-mercy = 30
hook-master-start = unix_signal:15 gracefully_kill_them_all
start-time = %t
disable-logging = true
EOF
}
uwsgi_ini keystone "$keystone_port" keystone.wsgi.api:application "OS_KEYSTONE_CONFIG_DIR=$etc"
uwsgi_ini placement "$placement_port" placement.wsgi.api:application "OS_PLACEMENT_CONFIG_DIR=$etc"
uwsgi_ini glance "$glance_port" glance.wsgi.api:application "OS_GLANCE_CONFIG_DIR=$etc"
uwsgi_ini neutron "$neutron_port" neutron.wsgi.api:application "OS_NEUTRON_CONFIG_DIR=$etc/neutron"
uwsgi_ini nova-api "$nova_port" nova.wsgi.osapi_compute:application "OS_NOVA_CONFIG_DIR=$etc"

cat >"$state/clouds.yaml" <<EOF
# The OpenStack of tests/integration/openstack/up.sh: "vantage" is a member of project
# vantage (what the driver runs as), "vantage-admin" the cloud's admin (the tests' own eyes).
clouds:
  vantage:
    auth:
      auth_url: $identity
      username: vantage
      password: $user_password
      project_name: vantage
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    identity_api_version: 3
    interface: public
  vantage-admin:
    auth:
      auth_url: $identity
      username: admin
      password: $admin_password
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    identity_api_version: 3
    interface: public
EOF

# -- MariaDB and RabbitMQ ----------------------------------------------------------------------
log "starting MariaDB on 127.0.0.1:$mysql_port and RabbitMQ on 127.0.0.1:$amqp_port"
step mariadb-install mariadb-install-db --no-defaults --datadir="$state/mysql/data" \
    --user="$(id -un)" --auth-root-authentication-method=normal --skip-test-db \
    --skip-name-resolve
# durability is worth nothing here: a test stack lives for one run
start_service mariadb mariadbd --no-defaults --datadir="$state/mysql/data" --socket="$sock" \
    --port="$mysql_port" --bind-address=127.0.0.1 --user="$(id -un)" --skip-name-resolve \
    --skip-log-bin --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 \
    --innodb-buffer-pool-size=256M --max-connections=2000 --character-set-server=utf8mb4 \
    --collation-server=utf8mb4_general_ci --pid-file="$state/mysql/mariadbd.pid"

# Erlang's port mapper first, ours, so RabbitMQ does not daemonize one that outlives the stack
start_service epmd epmd -address 127.0.0.1 -port "$epmd_port"
echo '[].' >"$state/rabbitmq/enabled_plugins"
cat >"$state/rabbitmq/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$amqp_port
log.file.level = warning
EOF
wait_port "$epmd_port" 20 epmd epmd
start_service rabbitmq env HOME="$state/rabbitmq" ERL_EPMD_PORT="$epmd_port" \
    ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_CONF_ENV_FILE=/dev/null \
    RABBITMQ_NODENAME=vantage-os@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$amqp_port" RABBITMQ_DIST_PORT="$erl_dist_port" \
    RABBITMQ_CONFIG_FILE="$state/rabbitmq/rabbitmq" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$state/rabbitmq/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$state/rabbitmq/mnesia" RABBITMQ_LOG_BASE="$logs" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    /usr/lib/rabbitmq/bin/rabbitmq-server

wait_port "$mysql_port" 60 MariaDB mariadb
mysql_root() { mariadb --no-defaults --socket="$sock" -uroot "$@"; }
for name in keystone placement glance neutron nova_api nova nova_cell0; do
    step mariadb-setup mysql_root -e "CREATE DATABASE $name CHARACTER SET utf8"
done

# -- schemas and Keystone's content, in parallel -----------------------------------------------
log "syncing databases"
keystone_setup() {
    local manage=("$venv/bin/keystone-manage" --config-file "$etc/keystone.conf")
    "${manage[@]}" db_sync
    "${manage[@]}" fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
    "${manage[@]}" credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
    # admin, roles, the catalog, project and user "vantage": in-process, no API round trips
    "$py" "$here/keystone_seed.py" "$etc/keystone.conf" \
        --admin-password "$admin_password" --user-password "$user_password" \
        --endpoint "identity=http://127.0.0.1:$keystone_port/v3" \
        --endpoint "placement=http://127.0.0.1:$placement_port" \
        --endpoint "image=http://127.0.0.1:$glance_port" \
        --endpoint "network=http://127.0.0.1:$neutron_port" \
        --endpoint "compute=http://127.0.0.1:$nova_port/v2.1"
}
nova_setup() {
    local manage=("$venv/bin/nova-manage" --config-file "$etc/nova.conf")
    "${manage[@]}" api_db sync
    "${manage[@]}" cell_v2 map_cell0 --database_connection "$(db nova_cell0)"
    "${manage[@]}" db sync
    "${manage[@]}" cell_v2 create_cell --name cell1
}
syncs=()
run_sync() {  # NAME COMMAND...
    local name="$1"
    shift
    "$@" >>"$logs/$name.log" 2>&1 &
    syncs+=("$name:$!")
}
run_sync keystone-setup keystone_setup
run_sync nova-setup nova_setup
run_sync neutron-db-sync "$venv/bin/neutron-db-manage" --config-file "$etc/neutron/neutron.conf" \
    --config-file "$etc/neutron/plugins/ml2/ml2_conf.ini" upgrade heads
run_sync glance-db-sync "$venv/bin/glance-manage" --config-file "$etc/glance-api.conf" db_sync
run_sync placement-db-sync "$venv/bin/placement-manage" --config-file "$etc/placement.conf" db sync
failed=""
for entry in "${syncs[@]}"; do
    if ! wait "${entry#*:}"; then
        tail_log "${entry%%:*}"
        failed="$failed ${entry%%:*}"
    fi
done
[ -z "$failed" ] || fail "database setup failed:$failed"
log "databases ready"

# -- the services ------------------------------------------------------------------------------
wait_port "$amqp_port" 90 RabbitMQ rabbitmq
log "starting the APIs and Nova's services"
for name in keystone placement glance neutron nova-api; do
    start_service "$name" "$venv/bin/uwsgi" --ini "$etc/uwsgi-$name.ini"
done
for name in conductor scheduler; do
    start_service "nova-$name" "$venv/bin/nova-$name" --config-file "$etc/nova.conf"
done
start_service nova-compute "$venv/bin/nova-compute" --config-file "$etc/nova-cpu.conf"
wait_port "$keystone_port" 120 Keystone keystone
wait_port "$placement_port" 120 Placement placement
wait_port "$glance_port" 120 Glance glance
wait_port "$neutron_port" 120 Neutron neutron
wait_port "$nova_port" 120 "Nova API" nova-api

# -- what the tests use: compute host mapped, image, flavors, networks, router ----------------
log "seeding the test cloud"
if ! OS_CLIENT_CONFIG_FILE="$state/clouds.yaml" "$py" "$here/seed.py" \
        --state "$state" --compute-host "$compute_host" \
        --nova-manage "$venv/bin/nova-manage --config-file $etc/nova.conf" \
        >>"$logs/seed.log" 2>&1; then
    tail_log seed
    for name in nova-compute nova-api neutron; do tail_log "$name"; done
    fail "seeding the test cloud failed"
fi
