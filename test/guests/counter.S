/* Counting test guest for snapshot/restore (64-bit ELF without a PVH note: the VMM takes the
   Linux 64-bit entry). Ring 0 only sets up: SSE on, the user bit on the page tables of the
   first 2 MiB, a GDT with user segments; then IRETQ to ring 3 with IOPL 3 and interrupts off.
   (Under PVM ring-0 code is emulated, slowly and without SSE; user mode runs natively.)
   In ring 3 it counts forever, keeping the count in a register (r12), in guest memory
   (`counter`) and in an SSE register (xmm0), checks that the three agree, and prints
   "count=N\n" on COM1 after every step. A snapshot restored into another VMM process must
   continue the sequence where it was paused: registers, FPU/SSE state, memory and a port
   I/O instruction in flight all carry over. A disagreement prints "MISMATCH" and spins.
   A command line starting with 'f' drops the delay between lines: the guest then spends most
   of its time in port I/O exits, so a pause usually lands between an exit and its completion. */
#define COM1 0x3f8
#define DELAY 3000000
#define USER_DATA 0x1b
#define USER_CODE 0x23

  .text
  .code64
  .globl _start
_start:
  mov $0x80000, %rsp
  mov $DELAY, %r13d
  mov 0x228(%rsi), %eax        /* boot_params hdr.cmd_line_ptr */
  cmpb $'f', (%rax)
  jne 5f
  mov $1, %r13d                /* fast: no delay */
5:
  mov %cr4, %rax
  or $0x600, %rax              /* OSFXSR | OSXMMEXCPT: SSE on */
  mov %rax, %cr4
  mov %cr0, %rax
  and $~0x4, %rax              /* EM off */
  or $0x2, %rax                /* MP on */
  mov %rax, %cr0
  /* User bit on PML4[0], PDPT[0] and PD[0] (the 2 MiB page holding this image and stacks). */
  mov %cr3, %rax
  and $~0xfff, %rax
  orq $4, (%rax)
  mov (%rax), %rbx
  and $~0xfff, %rbx
  orq $4, (%rbx)
  mov (%rbx), %rcx
  and $~0xfff, %rcx
  orq $4, (%rcx)
  mov %rax, %cr3               /* flush the TLB */
  lgdt gdt_pointer(%rip)
  pushq $USER_DATA             /* SS */
  pushq $0x70000               /* RSP */
  pushq $0x3002                /* RFLAGS: IOPL 3, IF 0 */
  pushq $USER_CODE             /* CS */
  lea user(%rip), %rax
  pushq %rax
  iretq

user:
  xor %r12, %r12
  pxor %xmm0, %xmm0
  mov $1, %eax
  movq %rax, %xmm1
count:
  inc %r12
  incq counter(%rip)
  paddq %xmm1, %xmm0
  cmp counter(%rip), %r12
  jne mismatch
  movq %xmm0, %rax
  cmp %rax, %r12
  jne mismatch
  lea prefix(%rip), %rsi
  call puts
  mov %r12, %rax
  call putdec
  mov $COM1, %dx
  mov $'\n', %al
  outb %al, %dx
  mov %r13d, %ecx
1:
  dec %ecx
  jnz 1b
  jmp count
mismatch:
  lea bad(%rip), %rsi
  call puts
spin:
  jmp spin

puts:                          /* RSI: NUL-terminated string to COM1 */
  mov $COM1, %dx
2:
  lodsb
  test %al, %al
  jz 3f
  outb %al, %dx
  jmp 2b
3:
  ret

putdec:                        /* RAX: unsigned value, printed in decimal */
  sub $32, %rsp
  lea 31(%rsp), %rdi
  movb $0, (%rdi)
  mov $10, %rcx
4:
  xor %edx, %edx
  div %rcx
  add $'0', %dl
  dec %rdi
  mov %dl, (%rdi)
  test %rax, %rax
  jnz 4b
  mov %rdi, %rsi
  call puts
  add $32, %rsp
  ret

  .p2align 3
gdt:
  .quad 0
  .quad 0x00af9a000000ffff     /* 0x08 kernel code, 64-bit */
  .quad 0x00cf92000000ffff     /* 0x10 kernel data */
  .quad 0x00cff2000000ffff     /* 0x18 user data */
  .quad 0x00affa000000ffff     /* 0x20 user code, 64-bit */
gdt_end:
gdt_pointer:
  .word gdt_end - gdt - 1
  .quad gdt
counter: .quad 0
prefix:  .asciz "count="
bad:     .asciz "\nMISMATCH\n"
