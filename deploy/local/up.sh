#!/usr/bin/env bash
# Start a whole shoal stack on this machine, every process on loopback:
# etcd, nats-server, shoal-manager, shoal-scheduler, shoal-dispatcher, shoal-dns and
# N shoal-worker processes (127.0.1.1, 127.0.1.2, ...). State, configs, logs and pid
# files go to DIR (default <repo>/.shoal-local). Stop it with deploy/local/down.sh.
#
# Usage: deploy/local/up.sh [--dir DIR] [--workers N] [--release] [--no-build]
#
# Port overrides (environment; an explicitly set port must be free, a default one
# that is taken is replaced by the next free port):
#   SHOAL_LOCAL_ETCD_PORT (2379)  SHOAL_LOCAL_ETCD_PEER_PORT (2380)
#   SHOAL_LOCAL_NATS_PORT (4222)  SHOAL_LOCAL_MANAGER_PORT (2377)
#   SHOAL_LOCAL_DISPATCHER_PORT (4240)  SHOAL_LOCAL_SCHEDULER_PORT (4241)
#   SHOAL_LOCAL_DNS_GRPC_PORT (4242)  SHOAL_LOCAL_DNS_PORT (5354)
#   SHOAL_LOCAL_WORKER_PORT (4243)
# Other knobs: SHOAL_LOCAL_OTLP_ENDPOINT (""), SHOAL_LOCAL_LOG_FILTER ("info"),
#   SHOAL_LOCAL_LOG_FORMAT ("text"), SHOAL_LOCAL_HEALTH_TIMEOUT (60, seconds).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"

DIR="$REPO/.shoal-local"
WORKERS=3
PROFILE=debug
BUILD=1

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"; }
die() { echo "up.sh: error: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dir) [[ $# -ge 2 ]] || die "--dir needs a value"; DIR="$2"; shift 2 ;;
        --dir=*) DIR="${1#--dir=}"; shift ;;
        --workers) [[ $# -ge 2 ]] || die "--workers needs a value"; WORKERS="$2"; shift 2 ;;
        --workers=*) WORKERS="${1#--workers=}"; shift ;;
        --release) PROFILE=release; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ "$WORKERS" =~ ^[0-9]+$ ]] && (( WORKERS <= 254 )) || die "--workers must be a number from 0 to 254, got '$WORKERS'"
[[ -n "$DIR" ]] || die "--dir must not be empty"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
BIN_DIR="$REPO/target/$PROFILE"

# Read our knobs, then drop every SHOAL_* variable so that a user's environment (e.g.
# a sourced DIR/env or SHOAL_LISTEN) cannot override the config files written below.
env_or() { local v="${!1:-}"; if [[ -n "$v" ]]; then echo "$v"; else echo "$2"; fi; }
OTLP_ENDPOINT="$(env_or SHOAL_LOCAL_OTLP_ENDPOINT "")"
LOG_FILTER="$(env_or SHOAL_LOCAL_LOG_FILTER info)"
LOG_FORMAT="$(env_or SHOAL_LOCAL_LOG_FORMAT text)"
HEALTH_TIMEOUT="$(env_or SHOAL_LOCAL_HEALTH_TIMEOUT 60)"
declare -A PORT_ENV=(
    [etcd]=SHOAL_LOCAL_ETCD_PORT [etcd_peer]=SHOAL_LOCAL_ETCD_PEER_PORT
    [nats]=SHOAL_LOCAL_NATS_PORT [manager]=SHOAL_LOCAL_MANAGER_PORT
    [dispatcher]=SHOAL_LOCAL_DISPATCHER_PORT [scheduler]=SHOAL_LOCAL_SCHEDULER_PORT
    [dns_grpc]=SHOAL_LOCAL_DNS_GRPC_PORT [dns]=SHOAL_LOCAL_DNS_PORT
    [worker]=SHOAL_LOCAL_WORKER_PORT
)
declare -A PORT_DEFAULT=(
    [etcd]=2379 [etcd_peer]=2380 [nats]=4222 [manager]=2377 [dispatcher]=4240
    [scheduler]=4241 [dns_grpc]=4242 [dns]=5354 [worker]=4243
)
declare -A PORT_REQ=()
for k in "${!PORT_ENV[@]}"; do PORT_REQ[$k]="${!PORT_ENV[$k]:-}"; done
while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^SHOAL_' || true)

# --------------------------------------------------------------------------- helpers

# running PID: the process exists and is not a zombie (an exited process whose parent,
# often a slow init, has not reaped it yet).
running() {
    kill -0 "$1" 2>/dev/null || return 1
    local state
    state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null || true)"
    [[ "$state" != Z ]]
}

# pid_alive PIDFILE: true when the pid in PIDFILE is a live process whose command line
# names the binary recorded next to it (PIDFILE's .bin), guarding against pid reuse.
pid_alive() {
    local pidfile="$1" pid bin
    [[ -f "$pidfile" ]] || return 1
    pid="$(head -n1 "$pidfile" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    running "$pid" || return 1
    bin="$(cat "${pidfile%.pid}.bin" 2>/dev/null || true)"
    [[ -z "$bin" ]] && return 0
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$bin"
}

# find_bin NAME: path of a system binary, also looking in sbin dirs not on a user's PATH.
find_bin() {
    local p
    p="$(command -v "$1" 2>/dev/null || true)"
    if [[ -n "$p" ]]; then echo "$p"; return 0; fi
    for d in /usr/sbin /sbin /usr/local/sbin /usr/local/bin /usr/bin; do
        if [[ -x "$d/$1" ]]; then echo "$d/$1"; return 0; fi
    done
    return 1
}

# Ports handed out by this run, so two services never get the same one.
declare -A CLAIMED=()

# port_in_use IP PORT [udp]: a listener exists on IP:PORT or on a wildcard address.
port_in_use() {
    local ip="$1" port="$2" proto="${3:-tcp}" flag=-Hltn
    [[ "$proto" == udp ]] && flag=-Hlun
    ss "$flag" 2>/dev/null | awk '{print $4}' | grep -qE "^(${ip//./\\.}|0\.0\.0\.0|\*|\[::\]|\[::ffff:${ip//./\\.}\]):${port}\$"
}

# pick_port KEY IP [udp]: the requested port (must be free), else the default or the
# next free one after it. Sets PICKED and claims the port.
pick_port() {
    local key="$1" ip="$2" udp="${3:-}" port="${PORT_REQ[$1]}" explicit=1 tries=0
    if [[ -z "$port" ]]; then port="${PORT_DEFAULT[$key]}"; explicit=0; fi
    [[ "$port" =~ ^[0-9]+$ ]] || die "${PORT_ENV[$key]} must be a port number, got '$port'"
    while [[ -n "${CLAIMED[$ip:$port]:-}" ]] || port_in_use "$ip" "$port" ||
          { [[ -n "$udp" ]] && port_in_use "$ip" "$port" udp; }; do
        if (( explicit )); then
            die "port $ip:$port (${PORT_ENV[$key]}) is already in use"
        fi
        port=$((port + 1)); tries=$((tries + 1))
        (( tries < 200 )) || die "no free port near ${PORT_DEFAULT[$key]} for $key"
    done
    CLAIMED[$ip:$port]=1
    PICKED="$port"
}

# start NAME BIN ARGS...: run BIN detached (own session, stdin closed), output to
# DIR/NAME.log, pid to DIR/NAME.pid (written by the process itself before exec).
start() {
    local name="$1" bin="$2"; shift 2
    local log="$DIR/$name.log" pidfile="$DIR/$name.pid"
    printf '\n===== %s: starting %s %s\n' "$(date -Is)" "$bin" "$*" >> "$log"
    basename "$bin" > "$DIR/$name.bin"
    rm -f "$pidfile"
    setsid bash -c 'echo $$ > "$0"; exec "$@"' "$pidfile" "$bin" "$@" \
        < /dev/null >> "$log" 2>&1 &
    BGPID[$name]=$!
    local i
    for i in $(seq 1 100); do [[ -s "$pidfile" ]] && break; sleep 0.05; done
    [[ -s "$pidfile" ]] || fail "$name" "did not start (no pid file)"
    STARTED+=("$name")
}

# tail_log NAME: the last lines of NAME's log from its latest start, indented.
tail_log() {
    local log="$DIR/$1.log"
    echo "----- $log (latest run, last 40 lines) -----" >&2
    if [[ -f "$log" ]]; then
        awk '/^===== .*: starting /{n=0; delete a} {a[n++]=$0} END{for(i=0;i<n;i++) print a[i]}' "$log" |
            tail -n 40 | sed 's/^/  /' >&2
    fi
    echo "-----" >&2
}

# fail NAME MESSAGE: report, show NAME's log, stop whatever this run started, exit 1.
fail() {
    echo "up.sh: error: $1 $2" >&2
    tail_log "$1"
    stop_started
    exit 1
}

# stop_started: stop everything this run started (down.sh reads the pid files).
stop_started() {
    if (( ${#STARTED[@]} > 0 )); then
        disown -a 2>/dev/null || true
        echo "up.sh: stopping what was started (logs stay in $DIR)" >&2
        "$SCRIPT_DIR/down.sh" --dir "$DIR" >&2 || true
        STARTED=()
    fi
}

# wait_until NAME WHAT SECONDS CMD...: poll CMD every 0.25 s until it succeeds; fail
# if NAME's process dies or the deadline passes (showing CMD's last output).
wait_until() {
    local name="$1" what="$2" secs="$3"; shift 3
    local deadline=$((SECONDS + secs)) out=""
    until out="$("$@" 2>&1)"; do
        if ! pid_alive "$DIR/$name.pid"; then
            local bg="${BGPID[$name]:-}" status="unknown"
            if [[ -n "$bg" ]] && ! running "$bg"; then
                status=0
                wait "$bg" 2>/dev/null || status=$?
            fi
            fail "$name" "exited during startup (exit status $status)"
        fi
        if (( SECONDS >= deadline )); then
            fail "$name" "not $what after ${secs}s${out:+ (last check said: $(echo "$out" | tail -n 3 | tr '\n' ' '))}"
        fi
        sleep 0.25
    done
}

etcd_healthy() {
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" &&
        printf "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3 &&
        grep -q "\"health\":\"true\"" <&3' "$1"
}

nats_ready() {
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && head -c 5 <&3 | grep -q "^INFO"' "$1"
}

# The CLI of this stack: admin credentials in DIR/cli, the manager's socket for init.
CLI_DIR="$DIR/cli"
MANAGER_STATE="$DIR/manager"
MANAGER_SOCKET="$MANAGER_STATE/control.sock"
KEK_FILE="$DIR/swarm-ca.kek"
shoal_cli() { SHOAL_HOST="$MANAGER_ADDR" SHOAL_CERT_DIR="$CLI_DIR" SHOAL_STATE_DIR="$MANAGER_STATE" "$BIN_DIR/shoal" "$@"; }
# shoal_healthy ADDR [SERVER_NAME]: SERVING over TLS, checked against the swarm's CA.
shoal_healthy() { timeout 5 env SHOAL_CERT_DIR="$CLI_DIR" "$BIN_DIR/shoal" health -q "$1" --server-name "${2:-swarm-manager}"; }
socket_healthy() { timeout 5 "$BIN_DIR/shoal" health -q "unix://$MANAGER_SOCKET" --service shoal.v1.Control; }

toml_list() { # toml_list A B ... -> ["A", "B"]
    local out="" x
    for x in "$@"; do out+="${out:+, }\"$x\""; done
    echo "[$out]"
}

# common_config LISTEN: the keys every service takes.
common_config() {
    cat <<EOF
listen = "$1"
otlp_endpoint = "$OTLP_ENDPOINT"
log_format = "$LOG_FORMAT"
log_filter = "$LOG_FILTER"
EOF
}

# --------------------------------------------------------------------------- already up?

STARTED=()
declare -A BGPID=()
trap 'echo "up.sh: interrupted" >&2; stop_started; exit 130' INT TERM
shopt -s nullglob
alive=() dead=()
for pidfile in "$DIR"/*.pid; do
    name="$(basename "$pidfile" .pid)"
    if pid_alive "$pidfile"; then
        alive+=("$name")
    else
        dead+=("$name")
        rm -f "$pidfile" "${pidfile%.pid}.bin"
    fi
done
shopt -u nullglob
if (( ${#alive[@]} > 0 )); then
    if (( ${#dead[@]} == 0 )); then
        echo "shoal local stack already running in $DIR (${alive[*]})"
        if [[ -f "$DIR/summary.txt" ]]; then cat "$DIR/summary.txt"; fi
        exit 0
    fi
    die "stack in $DIR is only partly running (running: ${alive[*]}; dead: ${dead[*]}).
Run '$SCRIPT_DIR/down.sh --dir $DIR' and then this script again."
fi
(( ${#dead[@]} == 0 )) || echo "up.sh: removed stale pid files: ${dead[*]}"

# --------------------------------------------------------------------------- prerequisites

missing_pkgs=()
find_bin etcd > /dev/null || missing_pkgs+=(etcd-server)
find_bin nats-server > /dev/null || missing_pkgs+=(nats-server)
find_bin protoc > /dev/null || missing_pkgs+=(protobuf-compiler)
# busybox-static: the rootfs of the local `busybox` image the seeds' services use.
DOCKER_UP=0
if command -v docker > /dev/null && timeout 5 docker info > /dev/null 2>&1; then DOCKER_UP=1; fi
if (( DOCKER_UP )) && [[ ! -x /bin/busybox ]]; then missing_pkgs+=(busybox-static); fi
if (( ${#missing_pkgs[@]} > 0 )); then
    command -v apt-get > /dev/null || die "missing ${missing_pkgs[*]} and no apt-get to install them"
    SUDO=()
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo > /dev/null || die "missing ${missing_pkgs[*]}; not root and no sudo"
        SUDO=(sudo)
    fi
    echo "up.sh: installing ${missing_pkgs[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing_pkgs[@]}"
fi
ETCD_BIN="$(find_bin etcd)" || die "etcd not found after install"
NATS_BIN="$(find_bin nats-server)" || die "nats-server not found after install"

if (( BUILD )); then
    echo "up.sh: building shoal ($PROFILE)"
    cargo_args=(build --bins)
    [[ "$PROFILE" == release ]] && cargo_args+=(--release)
    (cd "$REPO" && cargo "${cargo_args[@]}") || die "cargo ${cargo_args[*]} failed"
fi
for b in shoal shoal-manager shoal-scheduler shoal-dispatcher shoal-dns shoal-worker; do
    [[ -x "$BIN_DIR/$b" ]] || die "$BIN_DIR/$b is missing (build it: cargo build --bins$([[ $PROFILE == release ]] && echo ' --release'))"
done

# A `busybox` image for the seeds' `service create … busybox …` when the engine has
# none: imported from Debian's static busybox, never pulled (no registry here).
if (( DOCKER_UP )) && ! docker image inspect busybox:latest > /dev/null 2>&1; then
    rootfs="$(mktemp -d)"
    mkdir -p "$rootfs/bin" "$rootfs/tmp"
    cp /bin/busybox "$rootfs/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [[ "$applet" == busybox ]] || ln -sf busybox "$rootfs/bin/$applet"
    done
    if tar -C "$rootfs" -c . | docker import -c 'CMD ["sh"]' -c 'ENV PATH=/bin' - busybox:latest > /dev/null; then
        echo "up.sh: imported a local busybox:latest image from /bin/busybox"
    else
        echo "up.sh: warning: could not import a busybox image (container services need local images)" >&2
    fi
    rm -rf "$rootfs"
fi

# --------------------------------------------------------------------------- ports

LO=127.0.0.1
PICKED=""
pick_port etcd $LO; ETCD_PORT=$PICKED
pick_port etcd_peer $LO; ETCD_PEER_PORT=$PICKED
pick_port nats $LO; NATS_PORT=$PICKED
pick_port manager $LO; MANAGER_PORT=$PICKED
pick_port dispatcher $LO; DISPATCHER_PORT=$PICKED
pick_port scheduler $LO; SCHEDULER_PORT=$PICKED
pick_port dns_grpc $LO; DNS_GRPC_PORT=$PICKED
pick_port dns $LO udp; DNS_PORT=$PICKED
WORKER_IPS=() WORKER_PORTS=()
for i in $(seq 1 "$WORKERS"); do
    WORKER_IPS+=("127.0.1.$i")
    pick_port worker "127.0.1.$i"; WORKER_PORTS+=("$PICKED")
done
# The manager's node runs tasks too (as in Swarm): a worker sharing its state dir.
pick_port worker $LO; MANAGER_WORKER_PORT=$PICKED

ETCD_EP="http://$LO:$ETCD_PORT"
NATS_URL="nats://$LO:$NATS_PORT"
MANAGER_ADDR="$LO:$MANAGER_PORT"
DISPATCHER_ADDR="$LO:$DISPATCHER_PORT"
SCHEDULER_ADDR="$LO:$SCHEDULER_PORT"
DNS_GRPC_ADDR="$LO:$DNS_GRPC_PORT"
DNS_ADDR="$LO:$DNS_PORT"

# --------------------------------------------------------------------------- infrastructure

echo "up.sh: starting etcd on $ETCD_EP (data $DIR/etcd)"
start etcd "$ETCD_BIN" \
    --name shoal-local --data-dir "$DIR/etcd" \
    --listen-client-urls "$ETCD_EP" --advertise-client-urls "$ETCD_EP" \
    --listen-peer-urls "http://$LO:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://$LO:$ETCD_PEER_PORT" \
    --initial-cluster "shoal-local=http://$LO:$ETCD_PEER_PORT" \
    --logger zap --log-outputs stderr --log-level warn

echo "up.sh: starting nats-server on $NATS_URL"
start nats "$NATS_BIN" -a "$LO" -p "$NATS_PORT"

wait_until etcd "healthy (GET /health)" 20 etcd_healthy "$ETCD_PORT"
wait_until nats "accepting clients" 20 nats_ready "$NATS_PORT"

# --------------------------------------------------------------------------- shoal services

infra_config() {
    cat <<EOF
etcd_endpoints = $(toml_list "$ETCD_EP")
nats_url = "$NATS_URL"
kek_file = "$KEK_FILE"
EOF
}

mkdir -p "$MANAGER_STATE" "$CLI_DIR"
chmod 700 "$MANAGER_STATE" "$CLI_DIR"
{ common_config "$MANAGER_ADDR"; infra_config; echo "state_dir = \"$MANAGER_STATE\""; echo "hostname = \"manager-1\""; } > "$DIR/manager.toml"
{ common_config "$SCHEDULER_ADDR"; infra_config; } > "$DIR/scheduler.toml"
{ common_config "$DISPATCHER_ADDR"; infra_config; echo "advertise_addr = \"$DISPATCHER_ADDR\""; } > "$DIR/dispatcher.toml"
{ common_config "$DNS_GRPC_ADDR"; infra_config; echo "dns_listen = \"$DNS_ADDR\""; } > "$DIR/dns.toml"
for i in $(seq 1 "$WORKERS"); do
    ip="${WORKER_IPS[$((i - 1))]}" port="${WORKER_PORTS[$((i - 1))]}"
    mkdir -p "$DIR/worker-$i"
    chmod 700 "$DIR/worker-$i"
    {
        common_config "$ip:$port"
        echo "advertise_addr = \"$ip\""
        echo "dispatcher_addrs = $(toml_list "$DISPATCHER_ADDR")"
        echo "manager_addrs = $(toml_list "$MANAGER_ADDR")"
        echo "state_dir = \"$DIR/worker-$i\""
        echo "hostname = \"worker-$i\""
        echo "nats_url = \"$NATS_URL\""
        echo "resolver_addrs = $(toml_list "$DNS_GRPC_ADDR")"
        echo "dns_addr = \"$DNS_ADDR\""
    } > "$DIR/worker-$i.toml"
done
{
    common_config "$LO:$MANAGER_WORKER_PORT"
    echo "advertise_addr = \"$LO\""
    echo "dispatcher_addrs = $(toml_list "$DISPATCHER_ADDR")"
    echo "manager_addrs = $(toml_list "$MANAGER_ADDR")"
    echo "state_dir = \"$MANAGER_STATE\""
    echo "hostname = \"manager-1\""
    echo "nats_url = \"$NATS_URL\""
    echo "resolver_addrs = $(toml_list "$DNS_GRPC_ADDR")"
    echo "dns_addr = \"$DNS_ADDR\""
} > "$DIR/manager-worker.toml"

declare -A ADDR=(
    [manager]="$MANAGER_ADDR" [scheduler]="$SCHEDULER_ADDR"
    [dispatcher]="$DISPATCHER_ADDR" [dns]="$DNS_GRPC_ADDR"
)

# 1. The manager, reachable on its local socket before any swarm exists.
echo "up.sh: starting shoal-manager on $MANAGER_ADDR"
start manager "$BIN_DIR/shoal-manager" --config "$DIR/manager.toml"
wait_until manager "serving its local socket $MANAGER_SOCKET" "$HEALTH_TIMEOUT" socket_healthy

# 2. The swarm: created once; a stack started again keeps its swarm.
if [[ -f "$CLI_DIR/certificates/swarm-node.crt" ]]; then
    echo "up.sh: swarm already initialised (credentials in $CLI_DIR)"
else
    echo "up.sh: shoal swarm init"
    shoal_cli --socket "$MANAGER_SOCKET" swarm init --advertise-addr "$MANAGER_ADDR" | sed 's/^/    /'
fi

# 3. The rest of the control plane: each issues its certificate from the swarm's CA.
SERVICES=(manager scheduler dispatcher dns)
for s in scheduler dispatcher dns; do
    echo "up.sh: starting shoal-$s on ${ADDR[$s]}"
    start "$s" "$BIN_DIR/shoal-$s" --config "$DIR/$s.toml"
done
echo "up.sh: waiting for grpc.health.v1 SERVING over TLS (up to ${HEALTH_TIMEOUT}s each)"
for s in "${SERVICES[@]}"; do
    wait_until "$s" "SERVING on ${ADDR[$s]} (shoal health)" "$HEALTH_TIMEOUT" shoal_healthy "${ADDR[$s]}"
done

# 4. The manager's own node runs tasks through a worker using the node certificate the
#    manager wrote into its state dir; then the workers, each on its own loopback
#    address, joined with the worker token.
SERVICES+=(manager-worker)
ADDR[manager-worker]="$LO:$MANAGER_WORKER_PORT"
echo "up.sh: starting shoal-worker for the manager's node on ${ADDR[manager-worker]}"
start manager-worker "$BIN_DIR/shoal-worker" --config "$DIR/manager-worker.toml"
TOKEN="$(shoal_cli swarm join-token -q worker)"
for i in $(seq 1 "$WORKERS"); do
    SERVICES+=("worker-$i")
    ADDR[worker-$i]="${WORKER_IPS[$((i - 1))]}:${WORKER_PORTS[$((i - 1))]}"
    echo "up.sh: starting shoal-worker worker-$i on ${ADDR[worker-$i]}"
    start "worker-$i" "$BIN_DIR/shoal-worker" --config "$DIR/worker-$i.toml"
    if [[ ! -f "$DIR/worker-$i/certificates/swarm-node.crt" ]]; then
        shoal_cli swarm join --token "$TOKEN" --state-dir "$DIR/worker-$i" \
            --advertise-addr "${WORKER_IPS[$((i - 1))]}" "$MANAGER_ADDR" | sed "s/^/    worker-$i: /"
    fi
done
wait_until manager-worker "attached (SERVING on ${ADDR[manager-worker]})" "$HEALTH_TIMEOUT" \
    shoal_healthy "${ADDR[manager-worker]}" swarm-manager
for i in $(seq 1 "$WORKERS"); do
    wait_until "worker-$i" "attached (SERVING on ${ADDR[worker-$i]})" "$HEALTH_TIMEOUT" \
        shoal_healthy "${ADDR[worker-$i]}" swarm-worker
done

# --------------------------------------------------------------------------- env + summary

cat > "$DIR/env" <<EOF
export PATH="$BIN_DIR:\$PATH"
export SHOAL_HOST=$MANAGER_ADDR
export SHOAL_CERT_DIR=$CLI_DIR
export SHOAL_STATE_DIR=$MANAGER_STATE
export SHOAL_LOCAL_DIR=$DIR
export SHOAL_DNS=$DNS_ADDR
EOF

{
    printf '%-15s %-24s %s\n' PROCESS ADDRESS LOG
    printf '%-15s %-24s %s\n' etcd "$ETCD_EP" "$DIR/etcd.log"
    printf '%-15s %-24s %s\n' nats "$NATS_URL" "$DIR/nats.log"
    for s in "${SERVICES[@]}"; do
        printf '%-15s %-24s %s\n' "$s" "${ADDR[$s]}" "$DIR/$s.log"
    done
    echo
    echo "Use the CLI:  source $DIR/env && shoal node ls"
    echo "              shoal swarm join-token worker"
    echo "              shoal events        # follow cluster events live"
    echo "              shoal config ls     # configs (shoal config create NAME FILE)"
    echo "DNS:          dig -p ${DNS_ADDR##*:} @${DNS_ADDR%:*} tasks.<service>   # shoal-dns"
    echo "Ports:        services published with -p answer on every node: 127.0.0.1, ${WORKER_IPS[*]}"
    echo "Stop:         $SCRIPT_DIR/down.sh --dir $DIR"
} > "$DIR/summary.txt"

echo
echo "shoal local stack is up in $DIR"
cat "$DIR/summary.txt"
