// kvm-probe: proves /dev/kvm really runs guest code. Creates a VM with 16 KiB of memory, one
// vCPU in real mode at 0x1000, and runs a few instructions:
//   out 0x10 'K' 'V' 'M', computes 2 + 40 and outs it, stores it to 0x5000 (outside memory:
//   an MMIO exit), hlt.
// Prints every exit it sees and "kvm-probe: OK" when they are exactly the expected ones;
// exit status 0 on success, 1 when KVM misbehaves, 2 when KVM is unusable (named reason).
// Built static with musl-gcc by lab/tools.ts; run inside the KVM lab (or anywhere with KVM).
// A KVM_RUN that never returns is reported (SIGALRM interrupts it) instead of hanging the lab.
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define MEM_SIZE 0x4000u
#define CODE_ADDR 0x1000u
#define PROBE_PORT 0x10u
#define MMIO_ADDR 0x5000u
#define MAX_EXITS 32
#define RUN_LIMIT_SECONDS 30u

static void on_alarm(int sig) { (void)sig; }

static const uint8_t guest_code[] = {
    0xba, 0x10, 0x00, /* mov dx, 0x10 */
    0xb0, 'K',        /* mov al, 'K' */
    0xee,             /* out dx, al */
    0xb0, 'V', 0xee,  /* mov al, 'V'; out dx, al */
    0xb0, 'M', 0xee,  /* mov al, 'M'; out dx, al */
    0xb8, 0x02, 0x00, /* mov ax, 2 */
    0x05, 0x28, 0x00, /* add ax, 40 */
    0xee,             /* out dx, al */
    0xa2, 0x00, 0x50, /* mov [0x5000], al */
    0xf4,             /* hlt */
};

/* What the guest must do, in order: 4 port writes, 1 MMIO write, hlt. */
static const uint8_t expected_io[] = {'K', 'V', 'M', 42};

static int die(int status, const char *what) {
  fprintf(stderr, "kvm-probe: %s: %s\n", what, errno ? strerror(errno) : "failed");
  return status;
}

int main(void) {
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) return die(2, "open /dev/kvm");
  int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
  if (api != KVM_API_VERSION) {
    fprintf(stderr, "kvm-probe: KVM API version %d, expected %d\n", api, KVM_API_VERSION);
    return 2;
  }
  printf("kvm-probe: KVM API version %d\n", api);

  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) return die(2, "KVM_CREATE_VM");
  uint8_t *mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return die(2, "mmap guest memory");
  memcpy(mem + CODE_ADDR, guest_code, sizeof guest_code);
  struct kvm_userspace_memory_region region = {
      .slot = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE, .userspace_addr = (uintptr_t)mem};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) return die(2, "KVM_SET_USER_MEMORY_REGION");

  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) return die(2, "KVM_CREATE_VCPU");
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size < (int)sizeof(struct kvm_run)) return die(2, "KVM_GET_VCPU_MMAP_SIZE");
  struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) return die(2, "mmap kvm_run");

  struct kvm_sregs sregs;
  if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) return die(2, "KVM_GET_SREGS");
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  sregs.ds.base = 0;
  sregs.ds.selector = 0;
  if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) return die(2, "KVM_SET_SREGS");
  struct kvm_regs regs = {.rip = CODE_ADDR, .rflags = 0x2};
  if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) return die(2, "KVM_SET_REGS");

  // No SA_RESTART: the alarm makes a stuck KVM_RUN return EINTR.
  struct sigaction alarm_action = {.sa_handler = on_alarm};
  sigemptyset(&alarm_action.sa_mask);
  if (sigaction(SIGALRM, &alarm_action, NULL) < 0) return die(2, "sigaction SIGALRM");
  alarm(RUN_LIMIT_SECONDS);

  size_t io_seen = 0;
  int mmio_seen = 0;
  for (int exits = 0; exits < MAX_EXITS; exits++) {
    fflush(stdout);
    if (ioctl(vcpu, KVM_RUN, 0) < 0) {
      if (errno == EINTR) {
        struct kvm_regs at = {0};
        ioctl(vcpu, KVM_GET_REGS, &at);
        fprintf(stderr, "kvm-probe: KVM_RUN did not return within %u s (after %d exits, rip 0x%llx)\n",
                RUN_LIMIT_SECONDS, exits, (unsigned long long)at.rip);
        return 1;
      }
      return die(1, "KVM_RUN");
    }
    switch (run->exit_reason) {
    case KVM_EXIT_IO: {
      if (run->io.direction != KVM_EXIT_IO_OUT || run->io.size != 1 || run->io.count != 1 ||
          run->io.port != PROBE_PORT || run->io.data_offset + 1u > (uint32_t)run_size) {
        fprintf(stderr, "kvm-probe: unexpected I/O exit: port 0x%x dir %u size %u count %u\n", run->io.port,
                run->io.direction, run->io.size, run->io.count);
        return 1;
      }
      uint8_t value = *((uint8_t *)run + run->io.data_offset);
      printf("kvm-probe: exit io out port 0x%x value 0x%02x\n", run->io.port, value);
      if (io_seen >= sizeof expected_io || value != expected_io[io_seen]) {
        fprintf(stderr, "kvm-probe: I/O write #%zu was 0x%02x, not the expected one\n", io_seen, value);
        return 1;
      }
      io_seen++;
      break;
    }
    case KVM_EXIT_MMIO:
      printf("kvm-probe: exit mmio %s addr 0x%llx len %u value 0x%02x\n", run->mmio.is_write ? "write" : "read",
             (unsigned long long)run->mmio.phys_addr, run->mmio.len, run->mmio.data[0]);
      if (!run->mmio.is_write || run->mmio.phys_addr != MMIO_ADDR || run->mmio.len != 1 || run->mmio.data[0] != 42) {
        fprintf(stderr, "kvm-probe: unexpected MMIO exit\n");
        return 1;
      }
      mmio_seen++;
      break;
    case KVM_EXIT_HLT:
      printf("kvm-probe: exit hlt\n");
      if (io_seen != sizeof expected_io || mmio_seen != 1) {
        fprintf(stderr, "kvm-probe: hlt after %zu I/O and %d MMIO exits (expected %zu and 1)\n", io_seen, mmio_seen,
                sizeof expected_io);
        return 1;
      }
      printf("kvm-probe: OK\n");
      return 0;
    case KVM_EXIT_FAIL_ENTRY:
      fprintf(stderr, "kvm-probe: entry failed, hardware reason 0x%llx\n",
              (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
      return 1;
    case KVM_EXIT_INTERNAL_ERROR:
      fprintf(stderr, "kvm-probe: KVM internal error, suberror %u\n", run->internal.suberror);
      return 1;
    case KVM_EXIT_SHUTDOWN:
      fprintf(stderr, "kvm-probe: guest shut down (triple fault)\n");
      return 1;
    default:
      fprintf(stderr, "kvm-probe: unexpected exit reason %u\n", run->exit_reason);
      return 1;
    }
  }
  fprintf(stderr, "kvm-probe: no hlt after %d exits\n", MAX_EXITS);
  return 1;
}
