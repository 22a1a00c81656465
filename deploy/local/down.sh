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

usage() { sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
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

# pid_of NAME: the pid in DIR/NAME.pid if that process is alive and is still the
# binary recorded in DIR/NAME.bin (guards against pid reuse); empty otherwise.
pid_of() {
    local pidfile="$DIR/$1.pid" pid bin
    [[ -f "$pidfile" ]] || return 0
    pid="$(head -n1 "$pidfile" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
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
            kill -0 "${pids[$name]}" 2>/dev/null || unset "pids[$name]"
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
    for n in "${names[@]}"; do rm -f "$DIR/$n.pid" "$DIR/$n.bin"; done
else
    workers=() services=() infra=() other=()
    for n in "${names[@]}"; do
        case "$n" in
            worker-*) workers+=("$n") ;;
            manager|scheduler|dispatcher|dns) services+=("$n") ;;
            etcd|nats) infra+=("$n") ;;
            *) other+=("$n") ;;
        esac
    done
    (( ${#workers[@]} == 0 )) || stop_group "${workers[@]}"
    (( ${#other[@]} == 0 )) || stop_group "${other[@]}"
    (( ${#services[@]} == 0 )) || stop_group "${services[@]}"
    # nats before etcd: etcd is the source of truth and goes last.
    for n in nats etcd; do
        if [[ " ${infra[*]:-} " == *" $n "* ]]; then stop_group "$n"; fi
    done
    echo "down.sh: stopped ${#running[@]} process(es); data and logs kept in $DIR"
fi

if (( PURGE )); then
    rm -rf -- "$DIR"
    echo "down.sh: removed $DIR"
fi
