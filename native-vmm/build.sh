#!/usr/bin/env bash
# Configures and builds the native VMM: native-vmm/build/smolvm-vmm, the static core library
# and the core unit tests. Used by `npm run build`.
#   native-vmm/build.sh            release build into native-vmm/build
#   native-vmm/build.sh --sanitize test build with ASan+UBSan into native-vmm/build-sanitize
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v cmake >/dev/null 2>&1 || missing+=("cmake (Debian package: cmake)")
command -v g++ >/dev/null 2>&1 || missing+=("g++ (Debian package: g++)")
command -v make >/dev/null 2>&1 || missing+=("make (Debian package: make)")
if ((${#missing[@]})); then
  printf 'native-vmm/build.sh: missing build tools: %s\n' "${missing[*]}" >&2
  echo "install them with: apt-get install -y cmake g++ make" >&2
  exit 1
fi
if ! g++ -std=c++17 -x c++ -fsyntax-only - <<<'#include <linux/kvm.h>' 2>/dev/null; then
  echo "native-vmm/build.sh: <linux/kvm.h> not found (Debian package: linux-libc-dev)" >&2
  exit 1
fi

build_dir=build
cmake_args=(-DCMAKE_BUILD_TYPE=Release)
if [[ "${1:-}" == "--sanitize" ]]; then
  build_dir=build-sanitize
  cmake_args+=(-DSMOLVM_SANITIZE=ON)
fi

cmake -S . -B "$build_dir" "${cmake_args[@]}" >/dev/null
# The build machines have 2 cores shared by several jobs: never more than 2 compile jobs.
cmake --build "$build_dir" -- -j2
