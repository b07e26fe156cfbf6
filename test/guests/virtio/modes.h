/* The guest's modes, one per device; each prints its results on COM1 and returns when all
   checks passed (a failed check prints "FAIL: ..." and resets at once). */
#pragma once

void run_blk(const char *cmdline);
void run_vsock(const char *cmdline);
void run_rng(const char *cmdline);
