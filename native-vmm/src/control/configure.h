// Turns a `configure` request (JSON + the fds that came with it) into a MachineConfig,
// validating every field with an error that names it. Host resources are referenced as
// {"fd": i} (the i-th descriptor of this message, SCM_RIGHTS), {"inherited_fd": n} (a
// descriptor the VMM inherited at spawn) or {"path": "..."} (opened by the VMM).
// With "restore": {"state": file, "memory": file} the machine comes from a snapshot: the state
// file is read and decoded here (a corrupt one fails here, naming the problem), and the
// remaining fields give only the new host side (disks by slot, vsock socket, serial, kvm).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "control/channel.h"
#include "control/json.h"
#include "util/fd.h"
#include "vm/machine.h"

namespace smolvm {

struct ConfigureRequest {
  MachineConfig machine;
  std::optional<MachineRestore> restore;
  std::string exit_record_path;     // optional: where the VMM writes its exit record
  bool stop_on_control_close = true;
  UniqueFd kvm;  // /dev/kvm handed in (machine.kvm_fd borrows it)
};

// Throws VmmError("configure: <field>: <why>"). `control_fd` may not be named as an
// inherited fd. Unused descriptors of the message are closed by the caller (RAII).
ConfigureRequest ParseConfigure(const Json& config, std::vector<UniqueFd>& message_fds,
                                int control_fd);

}  // namespace smolvm
