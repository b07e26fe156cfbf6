/* Port I/O, COM1 output, the i8042 reset and the few libc pieces a freestanding guest needs. */
#pragma once

#include <stddef.h>
#include <stdint.h>

static inline void outb(uint16_t port, uint8_t value) {
  __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

/* Keeps the compiler from moving memory accesses across it (x86 orders the rest). */
static inline void compiler_barrier(void) { __asm__ volatile("" : : : "memory"); }

static inline void cpu_relax(void) { __asm__ volatile("pause" : : : "memory"); }

void put_char(char c);
void put_str(const char *s);
/* At most `max` bytes of `s`, stopping at a NUL; unprintable bytes as '.'. */
void put_text(const char *s, size_t max);
void put_dec(uint64_t value);
void put_hex(uint64_t value);
void put_hex_bytes(const uint8_t *bytes, size_t len);

/* Ends the VM through the i8042 (the VMM exits with reason guest_reset). */
__attribute__((noreturn)) void guest_reset(void);
/* Prints "FAIL: <what>\n" and resets. */
__attribute__((noreturn)) void fail(const char *what);
/* Prints "FAIL: <what> <value>\n" and resets. */
__attribute__((noreturn)) void fail_value(const char *what, uint64_t value);

void *memset(void *dst, int value, size_t len);
void *memcpy(void *dst, const void *src, size_t len);
int memcmp(const void *a, const void *b, size_t len);
size_t strlen(const char *s);
