#include "cmdline.h"

#include "io.h"

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n'; }

/* Start of the word after position `i` (skipping the rest of the current word), bounded. */
static int next_word(const char *s, int i) {
  while (i < CMDLINE_MAX && s[i] && !is_space(s[i])) i++;
  while (i < CMDLINE_MAX && s[i] && is_space(s[i])) i++;
  return i;
}

/* Whether the word at `i` starts with `prefix`; then *after is the index past it. */
static int word_starts_with(const char *s, int i, const char *prefix, int *after) {
  int j = 0;
  while (prefix[j]) {
    if (i + j >= CMDLINE_MAX || s[i + j] != prefix[j]) return 0;
    j++;
  }
  *after = i + j;
  return 1;
}

/* Parses a decimal or 0x-prefixed hex number at `*i`, advancing it; 0 on no digits. */
static int parse_number(const char *s, int *i, uint64_t *value) {
  int base = 10;
  int k = *i;
  if (k + 1 < CMDLINE_MAX && s[k] == '0' && (s[k + 1] == 'x' || s[k + 1] == 'X')) {
    base = 16;
    k += 2;
  }
  uint64_t v = 0;
  int digits = 0;
  while (k < CMDLINE_MAX && s[k]) {
    char c = s[k];
    unsigned d;
    if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
    else if (base == 16 && c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
    else if (base == 16 && c >= 'A' && c <= 'F') d = (unsigned)(c - 'A' + 10);
    else break;
    if (digits++ >= 16) return 0;  /* more than fits in 64 bits */
    v = v * (uint64_t)base + d;
    k++;
  }
  if (digits == 0) return 0;
  *i = k;
  *value = v;
  return 1;
}

int cmdline_mode_is(const char *cmdline, const char *word) {
  int i = 0;
  while (i < CMDLINE_MAX && cmdline[i] && is_space(cmdline[i])) i++;
  int end;
  if (!word_starts_with(cmdline, i, word, &end)) return 0;
  return end >= CMDLINE_MAX || cmdline[end] == 0 || is_space(cmdline[end]);
}

uint64_t cmdline_number(const char *cmdline, const char *key, uint64_t fallback) {
  for (int i = 0; i < CMDLINE_MAX && cmdline[i]; i = next_word(cmdline, i)) {
    if (is_space(cmdline[i])) continue;
    int after;
    if (!word_starts_with(cmdline, i, key, &after) || after >= CMDLINE_MAX || cmdline[after] != '=')
      continue;
    after++;
    uint64_t value;
    if (!parse_number(cmdline, &after, &value) ||
        (after < CMDLINE_MAX && cmdline[after] && !is_space(cmdline[after]))) {
      put_str("FAIL: bad number for ");
      put_str(key);
      put_char('\n');
      guest_reset();
    }
    return value;
  }
  return fallback;
}

int cmdline_mmio_slots(const char *cmdline, struct mmio_slot *slots, int max) {
  int count = 0;
  for (int i = 0; i < CMDLINE_MAX && cmdline[i]; i = next_word(cmdline, i)) {
    int k;
    if (!word_starts_with(cmdline, i, "virtio_mmio.device=4K@", &k)) continue;
    uint64_t base, gsi;
    if (!parse_number(cmdline, &k, &base) || k >= CMDLINE_MAX || cmdline[k] != ':') {
      fail("malformed virtio_mmio.device base");
    }
    k++;
    if (!parse_number(cmdline, &k, &gsi) || gsi > 255 || (base & 0xfff) != 0)
      fail("malformed virtio_mmio.device gsi or unaligned base");
    if (count == max) fail("more virtio_mmio.device declarations than the guest handles");
    slots[count].base = base;
    slots[count].gsi = (uint32_t)gsi;
    count++;
  }
  return count;
}
