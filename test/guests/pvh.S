/* PVH test guest: entered in 32-bit protected mode with EBX = hvm_start_info. Prints a
   greeting, the command line and the first bytes of the first module (the initramfs) on
   COM1, pokes unclaimed I/O ports and MMIO, then resets through the i8042. */
#define COM1 0x3f8

  .section .note.pvh, "a"
  .p2align 2
  .long 4                      /* name size */
  .long 4                      /* descriptor size */
  .long 18                     /* XEN_ELFNOTE_PHYS32_ENTRY */
  .asciz "Xen"
  .long _start

  .text
  .code32
  .globl _start
_start:
  mov $0x80000, %esp
  mov %ebx, %edi               /* keep the start info pointer */
  cmpl $0x336ec578, (%edi)     /* hvm_start_info magic */
  jne fail
  mov $hello, %esi
  call puts
  mov 24(%edi), %esi           /* cmdline_paddr (low half) */
  call puts
  mov $newline, %esi
  call puts
  cmpl $0, 12(%edi)            /* nr_modules */
  je 1f
  mov 16(%edi), %eax           /* modlist_paddr */
  mov (%eax), %esi             /* first module's paddr: a NUL-terminated text */
  call puts
1:
  /* Unclaimed port I/O and MMIO: the VMM must shrug these off. */
  mov $0x1234, %dx
  inb %dx, %al
  mov $0x5678, %dx
  outb %al, %dx
  outb %al, $0x80              /* the io_delay sink */
  movl 0xd8000000, %eax
  movl %eax, 0xd8000010
  mov $done, %esi
  call puts
  mov $0xfe, %al               /* i8042 pulse reset */
  outb %al, $0x64
halt:
  hlt
  jmp halt
fail:
  mov $bad, %esi
  call puts
  jmp halt

puts:                          /* ESI: NUL-terminated string to COM1 */
  mov $COM1, %dx
2:
  lodsb
  test %al, %al
  jz 3f
  outb %al, %dx
  jmp 2b
3:
  ret

hello:   .asciz "hello from pvh\ncmdline: "
newline: .asciz "\n"
done:    .asciz "\npvh guest done\n"
bad:     .asciz "bad start info\n"
