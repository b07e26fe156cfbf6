#!/usr/bin/env bash
# Builds the node addon (native-vmm/src/addon/build/Release/smolvm_vmm_addon.node) with
# node-gyp. Run by `npm install` / `npm ci` (the package's install script) and by hand.
# npm on these machines sets nodedir=/usr (npm_config_nodedir): no headers are downloaded.
set -euo pipefail
here="${BASH_SOURCE[0]}"
[[ "$here" == */* ]] && cd "${here%/*}"

missing=()
command -v g++ >/dev/null 2>&1 || missing+=("g++ (Debian package: g++)")
command -v make >/dev/null 2>&1 || missing+=("make (Debian package: make)")
command -v python3 >/dev/null 2>&1 || missing+=("python3 (Debian package: python3)")
if ((${#missing[@]})); then
  printf 'smolvm addon: missing build tools: %s\n' "${missing[*]}" >&2
  echo "install them with: apt-get install -y g++ make python3, then run npm install again" >&2
  exit 1
fi
nodedir="${npm_config_nodedir:-}"
if [[ -z "$nodedir" && -f /usr/include/node/node_api.h ]]; then nodedir=/usr; fi
if [[ -n "$nodedir" && ! -f "$nodedir/include/node/node_api.h" ]]; then
  echo "smolvm addon: no Node headers under $nodedir/include/node (Debian package: libnode-dev)" >&2
  exit 1
fi
repo_root="$(cd ../../.. && pwd)"
gyp="$repo_root/node_modules/.bin/node-gyp"
if [[ ! -x "$gyp" ]]; then gyp="$(command -v node-gyp || true)"; fi
if [[ -z "$gyp" ]]; then
  echo "smolvm addon: node-gyp not found (npm install installs it as a dev dependency)" >&2
  exit 1
fi
args=(rebuild --jobs 2)
[[ -n "$nodedir" ]] && args+=("--nodedir=$nodedir")
# node-gyp resolves node-addon-api from here: make the repository's node_modules visible.
export NODE_PATH="$repo_root/node_modules${NODE_PATH:+:$NODE_PATH}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
"$gyp" "${args[@]}" >"$log" 2>&1 || { cat "$log" >&2; echo "smolvm addon: node-gyp build failed (log above)" >&2; exit 1; }
echo "smolvm addon: built $(pwd)/build/Release/smolvm_vmm_addon.node"
