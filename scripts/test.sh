#!/usr/bin/env bash
# Runs every check and test of shoal on a fresh Debian machine: installs what the tests
# need (etcd, nats-server, protoc) when missing, then fmt, clippy, build, tests.
# Tests start their own etcd and nats-server on free loopback ports; nothing else is
# needed and nothing is left running.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# busybox-static: the rootfs of the test image the docker executor tests import.
[ -x /bin/busybox ] || need+=(busybox-static)
# iproute2: the worker puts VIPs of container networks on their Docker bridges.
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo build (binaries used by the process tests)"
cargo build --workspace --bins --locked
echo "==> cargo test"
mkdir -p target
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee target/test-output.log
status=${PIPESTATUS[0]}
set -e
grep -E '^test result:' target/test-output.log | awk '{p+=$4; f+=$6} END {printf "==> %d passed, %d failed\n", p, f}'
exit "$status"
