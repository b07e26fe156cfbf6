#!/usr/bin/env bash
# smolvm set-up for a fresh Debian bookworm machine (run as root):
#   scripts/setup.sh demo   install + build everything, then run a container in a microVM
#                           through a private containerd (ctr run --runtime io.containerd.smolvm.v1)
#   scripts/setup.sh test   install + build everything, then run every test suite
#   scripts/setup.sh build  install + build only
# Idempotent and cached: packages already present are not reinstalled, the guest kernel is
# rebuilt only when its inputs change (cache: /var/lib/smolvm/kernels/<key>).
set -euo pipefail
cd "$(dirname "$0")/.."
action="${1:-build}"

APT_PACKAGES=(
  containerd runc                       # the real containerd 1.6 the conformance suite drives
  qemu-system-x86                       # the tcg backend
  erofs-utils e2fsprogs                 # guest images (erofs) and writable disks (ext4)
  linux-source-6.1 flex bison bc libelf-dev libssl-dev xz-utils make gcc  # the guest kernel
  musl-tools libseccomp-dev             # smolvm-init, static
  busybox-static                        # the test image
  protobuf-compiler                     # proto/ -> TypeScript at build time
  cmake g++                             # the native VMM (smolvm-vmm) and its addon
  cpio kmod util-linux procps
)

log() { printf '\n== %s\n' "$*" >&2; }

install_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then echo "setup: run as root to install packages" >&2; exit 1; fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

build() {
  log "npm ci"
  npm ci --no-audit --no-fund
  log "building (proto codegen, TypeScript, smolvm-init)"
  npm run build
  log "guest kernel (cached by its inputs)"
  node bin/smolvm kernel build
}

install_packages
build
case "$action" in
  build) ;;
  demo) log "running a container in a microVM through containerd"; node dist/conformance/demo.js ;;
  test)
    log "tests"
    out="$(mktemp)"
    # Every skipped test with its reason (test/helpers/ci-reporter.ts), for the summary.
    export SMOLVM_TEST_SKIP_LOG="$(mktemp)"
    set +e
    npm test 2>&1 | tee "$out"
    status=${PIPESTATUS[0]}
    # One closing summary for every suite; it fails on a skip that must not happen here.
    log "summary"
    node scripts/ci-summary.js "$out" "$SMOLVM_TEST_SKIP_LOG"
    summary=$?
    set -e
    rm -f "$out" "$SMOLVM_TEST_SKIP_LOG"
    if ((status == 0 && summary != 0)); then status=$summary; fi
    exit "$status"
    ;;
  *) echo "usage: scripts/setup.sh demo|test|build" >&2; exit 2 ;;
esac
