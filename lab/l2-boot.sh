#!/bin/sh
# Runs INSIDE the KVM lab: boots a kernel as an L2 guest under QEMU with the lab's /dev/kvm
# (-enable-kvm -M microvm,acpi=off, as the tcg backend does but with KVM) and times it:
#   l2-boot.sh KERNEL INITRAMFS [TIMEOUT_SECONDS] [RUNS]
# The initramfs's /init prints a marker line (lab/tools.ts, L2_INIT_MARKER) and reboots, which
# makes QEMU exit (-no-reboot; reboot=t because microvm without ACPI has no other reset path the
# guest kernel finds). Boots RUNS times (default 1; the first is cold: QEMU and its libraries
# are paged in over 9p). Prints each guest console, then per run
#   l2-boot: run I: init after N ms, qemu exited R after M ms
# and exits 0 when every run reached init and QEMU exited 0, else QEMU's status or 3.
set -u
usage='usage: l2-boot.sh KERNEL INITRAMFS [TIMEOUT_SECONDS] [RUNS]'
kernel=${1:?$usage}
initramfs=${2:?$usage}
limit=${3:-120}
runs=${4:-1}
marker='smolvm-l2: init reached'
[ -c /dev/kvm ] || { echo "l2-boot: no /dev/kvm here" >&2; exit 2; }
[ -r "$kernel" ] || { echo "l2-boot: cannot read kernel $kernel" >&2; exit 2; }
[ -r "$initramfs" ] || { echo "l2-boot: cannot read initramfs $initramfs" >&2; exit 2; }
case $runs in ''|*[!0-9]*|0) echo "l2-boot: RUNS must be a positive integer" >&2; exit 2 ;; esac

ms() { echo $(( $(date +%s%N) / 1000000 )); }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
result=0
i=1
while [ "$i" -le "$runs" ]; do
  start=$(ms)
  # The console goes through a timestamping reader so the marker's arrival is measured as it
  # happens, not when QEMU exits.
  { timeout -k 5 "$limit" qemu-system-x86_64 -enable-kvm -cpu host -M microvm,acpi=off \
      -m 256 -smp 1 -nodefaults -no-user-config -display none -no-reboot \
      -kernel "$kernel" -initrd "$initramfs" -append "console=ttyS0 panic=-1 reboot=t quiet" \
      -serial stdio < /dev/null 2>&1
    echo "l2-boot-qemu-status $?"
  } | while IFS= read -r line; do
    case $line in
      *"$marker"*) echo "$line"; echo "l2-boot-marker-ms $(( $(ms) - start ))" ;;
      *) echo "$line" ;;
    esac
  done > "$log"
  end=$(ms)
  cat "$log"
  status=$(sed -n 's/^l2-boot-qemu-status //p' "$log")
  init_ms=$(sed -n 's/^l2-boot-marker-ms //p' "$log")
  echo "l2-boot: run $i: init after ${init_ms:-never} ms, qemu exited ${status:-?} after $(( end - start )) ms"
  if [ -z "$init_ms" ]; then
    result=3
  elif [ "${status:-1}" != 0 ] && [ "$result" = 0 ]; then
    result=${status:-1}
  fi
  i=$((i + 1))
done
exit "$result"
