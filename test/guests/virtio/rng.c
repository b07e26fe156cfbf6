/* rng mode: the transport refuses a driver that will not take VIRTIO_F_VERSION_1; then two
   64-byte requests to virtio-rng must each come back full, not all zeros, and different. */
#include "io.h"
#include "modes.h"
#include "virtio.h"

#define RNG_BYTES 64

static struct virtio_dev rng;
static struct virtq queue __attribute__((aligned(4096)));
static uint8_t first[RNG_BYTES], second[RNG_BYTES];

/* FEATURES_OK without VERSION_1 must not stick (virtio 1.1 §3.1.1: the device refuses). */
static void check_legacy_refused(void) {
  virtio_reset(&rng);
  virtio_write32(&rng, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
  virtio_write32(&rng, 0x024, 1);  /* DriverFeaturesSel: high word, where VERSION_1 lives */
  virtio_write32(&rng, 0x020, 0);
  virtio_write32(&rng, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
  if (virtio_status(&rng) & STATUS_FEATURES_OK) fail("rng: FEATURES_OK accepted without VERSION_1");
  virtio_reset(&rng);
  put_str("rng: features without VERSION_1 refused: ok\n");
}

static void fill(uint8_t *buf) {
  struct vbuf b = {buf, RNG_BYTES, 1};
  uint32_t len = virtq_transact(&queue, &b, 1);
  if (len != RNG_BYTES) fail_value("rng: used length", len);
}

static int all_zero(const uint8_t *buf) {
  for (int i = 0; i < RNG_BYTES; i++)
    if (buf[i]) return 0;
  return 1;
}

void run_rng(const char *cmdline) {
  if (!virtio_find(cmdline, VIRTIO_ID_RNG, 0, &rng)) fail("rng: no virtio-rng device");
  check_legacy_refused();
  virtio_begin_init(&rng, 0);
  virtq_setup(&rng, &queue, 0);
  virtio_write32(&rng, 0x030, 1);  /* QueueSel 1: virtio-rng has one queue only */
  if (virtio_read32(&rng, 0x034) != 0) fail("rng: a second queue has a nonzero maximum size");
  virtio_driver_ok(&rng);
  fill(first);
  fill(second);
  if (all_zero(first) || all_zero(second)) fail("rng: all zeros");
  if (memcmp(first, second, RNG_BYTES) == 0) fail("rng: two reads gave the same bytes");
  put_str("rng: ");
  put_hex_bytes(first, 16);
  put_str("... not all zeros, two reads differ: ok\n");
  virtio_reset(&rng);
}
