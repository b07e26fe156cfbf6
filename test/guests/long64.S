/* 64-bit test guest (ELF without a PVH note, so the VMM takes the Linux 64-bit entry: long
   mode, identity paging, RSI = boot_params). Prints a greeting, the command line and the
   initramfs text, pokes unclaimed I/O ports and MMIO, then does what the first character of
   the command line asks:
     r  reset through the i8042 (default)
     t  triple fault (no IDT, then #UD)
     s  spin forever printing a dot now and then (for pause/resume/stop tests)
     h  cli; hlt forever (nothing can wake it: only a stop ends it) */
#define COM1 0x3f8

  .text
  .code64
  .globl _start
_start:
  mov $0x80000, %rsp
  mov %rsi, %rbx               /* boot_params */
  cmpl $0x53726448, 0x202(%rbx)  /* "HdrS" */
  jne fail
  lea hello(%rip), %rsi
  call puts
  mov 0x228(%rbx), %esi        /* hdr.cmd_line_ptr */
  mov %rsi, %r12
  call puts
  lea newline(%rip), %rsi
  call puts
  cmpl $0, 0x21c(%rbx)         /* hdr.ramdisk_size */
  je 1f
  mov 0x218(%rbx), %esi        /* hdr.ramdisk_image */
  call puts
1:
  mov $0x1234, %dx
  inb %dx, %al
  mov $0x5678, %dx
  outl %eax, %dx
  movq 0xd8000000, %rax
  movq %rax, 0xd8000010
  lea done(%rip), %rsi
  call puts
  movb (%r12), %al
  cmp $'t', %al
  je triple
  cmp $'s', %al
  je spin
  cmp $'h', %al
  je halt_forever
  mov $0xfe, %al
  outb %al, $0x64
halt_forever:
  cli
  hlt
  jmp halt_forever
triple:
  lidt null_idt(%rip)
  ud2
spin:
  mov $20000, %ecx
2:
  dec %ecx
  jnz 2b
  mov $'.', %al
  mov $COM1, %dx
  outb %al, %dx
  jmp spin
fail:
  lea bad(%rip), %rsi
  call puts
  jmp halt_forever

puts:                          /* RSI: NUL-terminated string to COM1 */
  mov $COM1, %dx
3:
  lodsb
  test %al, %al
  jz 4f
  outb %al, %dx
  jmp 3b
4:
  ret

  .p2align 3
null_idt:
  .word 0
  .quad 0
hello:   .asciz "hello from long mode\ncmdline: "
newline: .asciz "\n"
done:    .asciz "\nlong mode guest done\n"
bad:     .asciz "bad boot_params\n"
