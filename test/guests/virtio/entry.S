/* Entry of the virtio test guest, taken through the VMM's Linux 64-bit entry: long mode,
   interrupts off, RSI = boot_params. Switches to a stack of our own and calls guest_main; a
   return from it resets the machine through the i8042 like guest_reset() does. */
  .section .text.entry, "ax"
  .code64
  .globl _start
_start:
  lea stack_top(%rip), %rsp
  mov %rsi, %rdi               /* guest_main(boot_params) */
  call guest_main
1:
  mov $0xfe, %al               /* i8042 pulse reset */
  outb %al, $0x64
  cli
  hlt
  jmp 1b

  .bss
  .p2align 4
stack:
  .skip 16384
stack_top:

  .section .note.GNU-stack, "", @progbits
