#include "io.h"

#define COM1 0x3f8
#define I8042_COMMAND 0x64
#define I8042_PULSE_RESET 0xfe

/* The VMM's 8250 takes every byte at once: no need to poll the line status. */
void put_char(char c) { outb(COM1, (uint8_t)c); }

void put_str(const char *s) {
  while (*s) put_char(*s++);
}

void put_text(const char *s, size_t max) {
  for (size_t i = 0; i < max && s[i]; i++) {
    char c = s[i];
    put_char(c >= 0x20 && c < 0x7f ? c : '.');
  }
}

void put_dec(uint64_t value) {
  char digits[21];
  int n = 0;
  do {
    digits[n++] = (char)('0' + value % 10);
    value /= 10;
  } while (value != 0);
  while (n > 0) put_char(digits[--n]);
}

static const char kHexDigits[] = "0123456789abcdef";

void put_hex(uint64_t value) {
  char digits[16];
  int n = 0;
  do {
    digits[n++] = kHexDigits[value & 0xf];
    value >>= 4;
  } while (value != 0);
  put_str("0x");
  while (n > 0) put_char(digits[--n]);
}

void put_hex_bytes(const uint8_t *bytes, size_t len) {
  for (size_t i = 0; i < len; i++) {
    put_char(kHexDigits[bytes[i] >> 4]);
    put_char(kHexDigits[bytes[i] & 0xf]);
  }
}

void guest_reset(void) {
  for (;;) {
    outb(I8042_COMMAND, I8042_PULSE_RESET);
    __asm__ volatile("cli; hlt");
  }
}

void fail(const char *what) {
  put_str("FAIL: ");
  put_str(what);
  put_char('\n');
  guest_reset();
}

void fail_value(const char *what, uint64_t value) {
  put_str("FAIL: ");
  put_str(what);
  put_char(' ');
  put_dec(value);
  put_char('\n');
  guest_reset();
}

void *memset(void *dst, int value, size_t len) {
  uint8_t *d = dst;
  while (len--) *d++ = (uint8_t)value;
  return dst;
}

void *memcpy(void *dst, const void *src, size_t len) {
  uint8_t *d = dst;
  const uint8_t *s = src;
  while (len--) *d++ = *s++;
  return dst;
}

int memcmp(const void *a, const void *b, size_t len) {
  const uint8_t *x = a, *y = b;
  for (size_t i = 0; i < len; i++)
    if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
  return 0;
}

size_t strlen(const char *s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}
