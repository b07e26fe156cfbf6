/* blk mode: two virtio-blk disks, one read-only and one writable (told apart by
   VIRTIO_BLK_F_RO). For each: serial (GET_ID) and capacity. On the writable disk: write two
   sectors from two descriptors at sector=N with a pattern from seed=S, flush, read them back
   through one descriptor and compare; a read past the end and an unknown request type fail
   properly. On the read-only disk: read sector ro_sector=K and print it; a write there must
   come back VIRTIO_BLK_S_IOERR and leave the sector as it was. */
#include "io.h"
#include "modes.h"
#include "virtio.h"

#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_FLUSH 9

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_BOGUS 0x55

#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

#define SECTOR 512
#define ID_BYTES 20

struct blk_req_header {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};

struct disk {
  struct virtio_dev dev;
  struct virtq queue __attribute__((aligned(4096)));
  uint64_t capacity;
  int read_only;
  char serial[ID_BYTES + 1];
};

static struct disk disks[2];
static struct blk_req_header header;
static uint8_t status_byte;
static uint8_t write_buf[2 * SECTOR] __attribute__((aligned(512)));
static uint8_t read_buf[2 * SECTOR] __attribute__((aligned(512)));
static uint8_t check_buf[SECTOR] __attribute__((aligned(512)));

/* One request: header, `data` buffers (device-writable for IN and GET_ID), status. Returns the
   status byte and checks the used length covers it. */
static uint8_t blk_request(struct disk *d, uint32_t type, uint64_t sector,
                           const struct vbuf *data, int data_count) {
  struct vbuf bufs[4];
  if (data_count > 2) fail("blk_request: too many data buffers");
  header.type = type;
  header.reserved = 0;
  header.sector = sector;
  status_byte = 0xff;
  bufs[0] = (struct vbuf){&header, sizeof header, 0};
  uint32_t data_in = 0;
  for (int i = 0; i < data_count; i++) {
    bufs[1 + i] = data[i];
    if (data[i].writable) data_in += data[i].len;
  }
  bufs[1 + data_count] = (struct vbuf){&status_byte, 1, 1};
  uint32_t used = virtq_transact(&d->queue, bufs, data_count + 2);
  if (used < 1 || used > data_in + 1) fail_value("blk: used length out of range:", used);
  return status_byte;
}

static void expect_status(uint8_t got, uint8_t want, const char *what) {
  if (got == want) return;
  put_str("FAIL: blk: ");
  put_str(what);
  put_str(": status ");
  put_dec(got);
  put_str(", expected ");
  put_dec(want);
  put_char('\n');
  guest_reset();
}

static void open_disk(struct disk *d) {
  virtio_begin_init(&d->dev, FEATURE(VIRTIO_BLK_F_RO) | FEATURE(VIRTIO_BLK_F_FLUSH));
  virtq_setup(&d->dev, &d->queue, 0);
  virtio_driver_ok(&d->dev);
  d->read_only = (d->dev.features & FEATURE(VIRTIO_BLK_F_RO)) != 0;
  d->capacity = virtio_config64(&d->dev, 0);
  struct vbuf id = {d->serial, ID_BYTES, 1};
  expect_status(blk_request(d, VIRTIO_BLK_T_GET_ID, 0, &id, 1), VIRTIO_BLK_S_OK, "GET_ID");
  d->serial[ID_BYTES] = 0;
  put_str("blk: disk at ");
  put_hex(d->dev.base);
  put_str(" serial=");
  put_text(d->serial, ID_BYTES);
  put_str(" capacity=");
  put_dec(d->capacity);
  put_str(" read_only=");
  put_dec((uint64_t)d->read_only);
  put_char('\n');
}

static uint8_t pattern_byte(uint64_t seed, uint32_t i) { return (uint8_t)(seed + i * 31u); }

static void test_writable(struct disk *d, uint64_t sector, uint64_t seed) {
  if (sector + 2 > d->capacity) fail("blk: sector= is past the writable disk's end");
  for (uint32_t i = 0; i < sizeof write_buf; i++) write_buf[i] = pattern_byte(seed, i);
  /* Two sectors from two descriptors: the device must gather them. */
  struct vbuf out[2] = {{write_buf, SECTOR, 0}, {write_buf + SECTOR, SECTOR, 0}};
  expect_status(blk_request(d, VIRTIO_BLK_T_OUT, sector, out, 2), VIRTIO_BLK_S_OK, "write");
  if (d->dev.features & FEATURE(VIRTIO_BLK_F_FLUSH))
    expect_status(blk_request(d, VIRTIO_BLK_T_FLUSH, 0, 0, 0), VIRTIO_BLK_S_OK, "flush");
  memset(read_buf, 0, sizeof read_buf);
  struct vbuf in = {read_buf, sizeof read_buf, 1};
  expect_status(blk_request(d, VIRTIO_BLK_T_IN, sector, &in, 1), VIRTIO_BLK_S_OK, "read back");
  if (memcmp(read_buf, write_buf, sizeof read_buf) != 0) fail("blk: read back differs from what was written");
  put_str("blk: wrote 2 sectors at ");
  put_dec(sector);
  put_str(" and read them back: ok\n");

  struct vbuf past = {check_buf, SECTOR, 1};
  expect_status(blk_request(d, VIRTIO_BLK_T_IN, d->capacity, &past, 1), VIRTIO_BLK_S_IOERR,
                "read past the end");
  put_str("blk: read past the end: IOERR ok\n");
  expect_status(blk_request(d, VIRTIO_BLK_T_BOGUS, 0, 0, 0), VIRTIO_BLK_S_UNSUPP, "unknown request type");
  put_str("blk: unknown request type: UNSUPP ok\n");
}

static void test_read_only(struct disk *d, uint64_t sector) {
  if (sector >= d->capacity) fail("blk: ro_sector= is past the read-only disk's end");
  struct vbuf in = {read_buf, SECTOR, 1};
  expect_status(blk_request(d, VIRTIO_BLK_T_IN, sector, &in, 1), VIRTIO_BLK_S_OK, "read-only read");
  put_str("blk: ro sector ");
  put_dec(sector);
  put_str(": ");
  put_text((const char *)read_buf, 48);
  put_char('\n');

  for (uint32_t i = 0; i < SECTOR; i++) check_buf[i] = (uint8_t)~read_buf[i];
  struct vbuf out = {check_buf, SECTOR, 0};
  expect_status(blk_request(d, VIRTIO_BLK_T_OUT, sector, &out, 1), VIRTIO_BLK_S_IOERR,
                "write to the read-only disk");
  struct vbuf again = {check_buf, SECTOR, 1};
  expect_status(blk_request(d, VIRTIO_BLK_T_IN, sector, &again, 1), VIRTIO_BLK_S_OK, "read-only re-read");
  if (memcmp(check_buf, read_buf, SECTOR) != 0) fail("blk: the refused write changed the read-only disk");
  put_str("blk: write to the read-only disk: IOERR ok\n");
}

void run_blk(const char *cmdline) {
  const uint64_t sector = cmdline_number(cmdline, "sector", 8);
  const uint64_t seed = cmdline_number(cmdline, "seed", 0x5a);
  const uint64_t ro_sector = cmdline_number(cmdline, "ro_sector", 0);
  for (int i = 0; i < 2; i++) {
    if (!virtio_find(cmdline, VIRTIO_ID_BLOCK, i, &disks[i].dev)) fail_value("blk: disks found:", (uint64_t)i);
    open_disk(&disks[i]);
  }
  if (disks[0].read_only == disks[1].read_only) fail("blk: need one read-only and one writable disk");
  struct disk *writable = disks[0].read_only ? &disks[1] : &disks[0];
  struct disk *read_only = disks[0].read_only ? &disks[0] : &disks[1];
  test_writable(writable, sector, seed);
  test_read_only(read_only, ro_sector);
  for (int i = 0; i < 2; i++) virtio_reset(&disks[i].dev);
  put_str("blk: all ok\n");
}
