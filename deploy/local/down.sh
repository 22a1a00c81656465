#!/usr/bin/env bash
# Stop the shoal stack started by deploy/local/up.sh: every process with a pid file in
# DIR gets SIGTERM, up to 10 s to exit, then SIGKILL. Workers go first, then the shoal
# services, then nats-server and etcd. Data and logs stay unless --purge is given.
#
# Usage: deploy/local/down.sh [--dir DIR] [--purge]
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"

DIR="$REPO/.shoal-local"
PURGE=0
GRACE=10

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"; }
die() { echo "down.sh: error: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dir) [[ $# -ge 2 ]] || die "--dir needs a value"; DIR="$2"; shift 2 ;;
        --dir=*) DIR="${1#--dir=}"; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ -n "$DIR" ]] || die "--dir must not be empty"

if [[ ! -d "$DIR" ]]; then
    echo "nothing running (no $DIR)"
    exit 0
fi
DIR="$(cd "$DIR" && pwd)"

# running PID: the process exists and is not a zombie (an exited process whose parent,
# often a slow init, has not reaped it yet).
running() {
    kill -0 "$1" 2>/dev/null || return 1
    local state
    state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null || true)"
    [[ "$state" != Z ]]
}

# pid_of NAME: the pid in DIR/NAME.pid if that process is alive and is still the
# binary recorded in DIR/NAME.bin (guards against pid reuse); empty otherwise.
pid_of() {
    local pidfile="$DIR/$1.pid" pid bin
    [[ -f "$pidfile" ]] || return 0
    pid="$(head -n1 "$pidfile" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    running "$pid" || return 0
    bin="$(cat "$DIR/$1.bin" 2>/dev/null || true)"
    if [[ -n "$bin" ]] && ! tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$bin"; then
        return 0
    fi
    echo "$pid"
}

# stop_group NAME...: SIGTERM all, wait up to GRACE seconds, SIGKILL the rest.
stop_group() {
    local name pid
    local -A pids=()
    for name in "$@"; do
        pid="$(pid_of "$name")"
        if [[ -n "$pid" ]]; then
            pids[$name]=$pid
            kill -TERM "$pid" 2>/dev/null || true
            echo "down.sh: stopping $name (pid $pid)"
        fi
    done
    local deadline=$((SECONDS + GRACE))
    while (( ${#pids[@]} > 0 )); do
        for name in "${!pids[@]}"; do
            running "${pids[$name]}" || unset "pids[$name]"
        done
        (( ${#pids[@]} > 0 )) || break
        if (( SECONDS >= deadline )); then
            for name in "${!pids[@]}"; do
                echo "down.sh: $name (pid ${pids[$name]}) ignored SIGTERM for ${GRACE}s; sending SIGKILL"
                kill -KILL "${pids[$name]}" 2>/dev/null || true
            done
            sleep 0.2
            break
        fi
        sleep 0.1
    done
    for name in "$@"; do rm -f "$DIR/$name.pid" "$DIR/$name.bin"; done
}

# stop_tasks: tasks outlive a worker restart on purpose (they are re-adopted), so the
# stack's task processes (their output goes to a log file under DIR) and containers
# (label shoal.node.id of one of the stack's nodes) are stopped here: SIGTERM to each
# process group, SIGKILL after GRACE seconds.
stop_tasks() {
    local pid out groups=()
    for env in /proc/[0-9]*/environ; do
        pid="${env#/proc/}"; pid="${pid%/environ}"
        { tr '\0' '\n' < "$env"; } 2>/dev/null | grep -q '^SHOAL_TASK_ID=' || continue
        out="$(readlink "/proc/$pid/fd/1" 2>/dev/null || true)"
        [[ "$out" == "$DIR"/* ]] || continue
        groups+=("$(ps -o pgid= -p "$pid" | tr -d ' ')")
    done
    if (( ${#groups[@]} > 0 )); then
        echo "down.sh: stopping ${#groups[@]} task process(es)"
        for g in "${groups[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
        local deadline=$((SECONDS + GRACE))
        while (( SECONDS < deadline )); do
            local alive=0
            for g in "${groups[@]}"; do kill -0 -- "-$g" 2>/dev/null && alive=1; done
            (( alive )) || break
            sleep 0.1
        done
        for g in "${groups[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
    fi
    if command -v docker >/dev/null 2>&1; then
        local id ids
        for id in "${node_ids[@]:-}"; do
            [[ -n "$id" ]] || continue
            ids="$(docker ps -aq --filter "label=shoal.node.id=$id" 2>/dev/null || true)"
            if [[ -n "$ids" ]]; then
                echo "down.sh: removing the task containers of node $id"
                # shellcheck disable=SC2086
                docker rm -f $ids >/dev/null 2>&1 || true
            fi
        done
        # The Docker networks the workers made for shoal networks: removed once no
        # container uses them (the engine refuses to remove one in use).
        local nets
        nets="$(docker network ls -q --filter label=com.shoal.network.id 2>/dev/null || true)"
        if [[ -n "$nets" ]]; then
            # shellcheck disable=SC2086
            docker network rm $nets >/dev/null 2>&1 || true
        fi
    fi
    # The stopped tasks' secret and config files (tmpfs, the workers' default
    # secrets_dir): nothing of a secret outlives the stack's tasks.
    local id
    for id in "${node_ids[@]:-}"; do
        [[ -n "$id" && -d "/dev/shm/shoal-$id" ]] || continue
        rm -rf -- "/dev/shm/shoal-$id"
    done
}

shopt -s nullglob
names=()
for f in "$DIR"/*.pid; do names+=("$(basename "$f" .pid)"); done
shopt -u nullglob

running=()
for n in "${names[@]}"; do
    if [[ -n "$(pid_of "$n")" ]]; then running+=("$n"); fi
done

if (( ${#running[@]} == 0 )); then
    echo "nothing running in $DIR"
    for n in "${names[@]}"; do rm -f "$DIR/$n.pid"; done
else
    # The stack's node ids, while the manager still answers: their task containers
    # are removed below.
    node_ids=()
    if [[ -f "$DIR/env" && " ${running[*]} " == *" manager "* ]]; then
        mapfile -t node_ids < <( (source "$DIR/env" && shoal node ls -q) 2>/dev/null || true)
    fi
    workers=() services=() infra=() other=()
    for n in "${names[@]}"; do
        case "$n" in
            worker-*|manager-worker) workers+=("$n") ;;
            manager|scheduler|dispatcher|dns) services+=("$n") ;;
            etcd|nats) infra+=("$n") ;;
            *) other+=("$n") ;;
        esac
    done
    (( ${#workers[@]} == 0 )) || stop_group "${workers[@]}"
    stop_tasks
    (( ${#other[@]} == 0 )) || stop_group "${other[@]}"
    (( ${#services[@]} == 0 )) || stop_group "${services[@]}"
    # nats before etcd: etcd is the source of truth and goes last.
    for n in nats etcd; do
        if [[ " ${infra[*]:-} " == *" $n "* ]]; then stop_group "$n"; fi
    done
    echo "down.sh: stopped ${#running[@]} process(es); data and logs kept in $DIR"
fi

# .bin files of processes no longer tracked.
shopt -s nullglob
for f in "$DIR"/*.bin; do [[ -f "${f%.bin}.pid" ]] || rm -f "$f"; done
shopt -u nullglob

if (( PURGE )); then
    rm -rf -- "$DIR"
    echo "down.sh: removed $DIR"
fi
