/* The virtio test guest: reads its command line from boot_params and runs the mode its first
   word names (blk, vsock, rng), then resets the machine. */
#include "cmdline.h"
#include "io.h"
#include "modes.h"

#define BOOT_PARAMS_HEADER_MAGIC 0x202 /* "HdrS" */
#define BOOT_PARAMS_CMD_LINE_PTR 0x228

void guest_main(const uint8_t *boot_params);

void guest_main(const uint8_t *boot_params) {
  if (*(const uint32_t *)(boot_params + BOOT_PARAMS_HEADER_MAGIC) != 0x53726448u)
    fail("no boot_params setup header");
  const char *cmdline =
      (const char *)(uintptr_t)*(const uint32_t *)(boot_params + BOOT_PARAMS_CMD_LINE_PTR);
  put_str("virtio guest: ");
  put_text(cmdline, 200);
  put_char('\n');
  if (cmdline_mode_is(cmdline, "blk")) run_blk(cmdline);
  else if (cmdline_mode_is(cmdline, "vsock")) run_vsock(cmdline);
  else if (cmdline_mode_is(cmdline, "rng")) run_rng(cmdline);
  else fail("unknown mode (want blk, vsock or rng)");
  put_str("virtio guest done\n");
  guest_reset();
}
