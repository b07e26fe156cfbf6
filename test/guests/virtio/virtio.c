#include "virtio.h"

#include "io.h"

/* virtio-mmio register offsets (virtio 1.1 §4.2.2). */
#define REG_MAGIC 0x000
#define REG_VERSION 0x004
#define REG_DEVICE_ID 0x008
#define REG_DEVICE_FEATURES 0x010
#define REG_DEVICE_FEATURES_SEL 0x014
#define REG_DRIVER_FEATURES 0x020
#define REG_DRIVER_FEATURES_SEL 0x024
#define REG_QUEUE_SEL 0x030
#define REG_QUEUE_NUM_MAX 0x034
#define REG_QUEUE_NUM 0x038
#define REG_QUEUE_READY 0x044
#define REG_QUEUE_NOTIFY 0x050
#define REG_STATUS 0x070
#define REG_QUEUE_DESC_LOW 0x080
#define REG_QUEUE_DESC_HIGH 0x084
#define REG_QUEUE_DRIVER_LOW 0x090
#define REG_QUEUE_DRIVER_HIGH 0x094
#define REG_QUEUE_DEVICE_LOW 0x0a0
#define REG_QUEUE_DEVICE_HIGH 0x0a4
#define REG_CONFIG_GENERATION 0x0fc
#define REG_CONFIG 0x100

#define VIRTIO_MMIO_MAGIC 0x74726976u /* "virt" */
#define MAX_SLOTS 32

uint32_t virtio_read32(const struct virtio_dev *dev, uint32_t offset) {
  return *(volatile uint32_t *)(uintptr_t)(dev->base + offset);
}

void virtio_write32(const struct virtio_dev *dev, uint32_t offset, uint32_t value) {
  *(volatile uint32_t *)(uintptr_t)(dev->base + offset) = value;
}

uint8_t virtio_config8(const struct virtio_dev *dev, uint32_t offset) {
  return *(volatile uint8_t *)(uintptr_t)(dev->base + REG_CONFIG + offset);
}

uint32_t virtio_config32(const struct virtio_dev *dev, uint32_t offset) {
  return virtio_read32(dev, REG_CONFIG + offset);
}

uint64_t virtio_config64(const struct virtio_dev *dev, uint32_t offset) {
  for (int attempt = 0; attempt < 100; attempt++) {
    uint32_t before = virtio_read32(dev, REG_CONFIG_GENERATION);
    uint64_t low = virtio_config32(dev, offset);
    uint64_t high = virtio_config32(dev, offset + 4);
    if (virtio_read32(dev, REG_CONFIG_GENERATION) == before) return low | (high << 32);
  }
  fail("config generation never settled");
}

int virtio_find(const char *cmdline, uint32_t device_id, int nth, struct virtio_dev *dev) {
  struct mmio_slot slots[MAX_SLOTS];
  int count = cmdline_mmio_slots(cmdline, slots, MAX_SLOTS);
  for (int i = 0; i < count; i++) {
    struct virtio_dev probe = {.base = slots[i].base, .gsi = slots[i].gsi};
    uint32_t magic = virtio_read32(&probe, REG_MAGIC);
    if (magic != VIRTIO_MMIO_MAGIC) fail_value("bad virtio-mmio magic, got", magic);
    uint32_t version = virtio_read32(&probe, REG_VERSION);
    if (version != 2) fail_value("virtio-mmio version is not 2 but", version);
    probe.device_id = virtio_read32(&probe, REG_DEVICE_ID);
    if (probe.device_id == 0) continue;  /* an empty slot */
    if (probe.device_id == device_id && nth-- == 0) {
      *dev = probe;
      return 1;
    }
  }
  return 0;
}

uint32_t virtio_status(const struct virtio_dev *dev) { return virtio_read32(dev, REG_STATUS); }

void virtio_reset(struct virtio_dev *dev) {
  virtio_write32(dev, REG_STATUS, 0);
  if (virtio_status(dev) != 0) fail("device status not 0 after reset");
}

uint64_t virtio_device_features(const struct virtio_dev *dev) {
  virtio_write32(dev, REG_DEVICE_FEATURES_SEL, 0);
  uint64_t low = virtio_read32(dev, REG_DEVICE_FEATURES);
  virtio_write32(dev, REG_DEVICE_FEATURES_SEL, 1);
  uint64_t high = virtio_read32(dev, REG_DEVICE_FEATURES);
  return low | (high << 32);
}

void virtio_begin_init(struct virtio_dev *dev, uint64_t wanted) {
  virtio_reset(dev);
  virtio_write32(dev, REG_STATUS, STATUS_ACKNOWLEDGE);
  virtio_write32(dev, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
  uint64_t offered = virtio_device_features(dev);
  if (!(offered & FEATURE(VIRTIO_F_VERSION_1))) fail("device does not offer VIRTIO_F_VERSION_1");
  dev->features = offered & (wanted | FEATURE(VIRTIO_F_VERSION_1));
  virtio_write32(dev, REG_DRIVER_FEATURES_SEL, 0);
  virtio_write32(dev, REG_DRIVER_FEATURES, (uint32_t)dev->features);
  virtio_write32(dev, REG_DRIVER_FEATURES_SEL, 1);
  virtio_write32(dev, REG_DRIVER_FEATURES, (uint32_t)(dev->features >> 32));
  virtio_write32(dev, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
  if (!(virtio_status(dev) & STATUS_FEATURES_OK)) fail("device refused our features");
}

void virtq_setup(struct virtio_dev *dev, struct virtq *q, uint32_t index) {
  virtio_write32(dev, REG_QUEUE_SEL, index);
  if (virtio_read32(dev, REG_QUEUE_READY) != 0) fail_value("queue already ready:", index);
  uint32_t max = virtio_read32(dev, REG_QUEUE_NUM_MAX);
  if (max < VIRTQ_SIZE) fail_value("queue maximum size too small:", max);
  memset(q, 0, sizeof *q);
  q->dev = dev;
  q->index = index;
  for (uint16_t i = 0; i < VIRTQ_SIZE; i++) q->desc[i].next = (uint16_t)(i + 1);
  q->num_free = VIRTQ_SIZE;
  /* We poll: ask the device not to interrupt (it must still work if it does). */
  q->avail.flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
  virtio_write32(dev, REG_QUEUE_NUM, VIRTQ_SIZE);
  uint64_t desc = (uintptr_t)q->desc, avail = (uintptr_t)&q->avail, used = (uintptr_t)&q->used;
  virtio_write32(dev, REG_QUEUE_DESC_LOW, (uint32_t)desc);
  virtio_write32(dev, REG_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
  virtio_write32(dev, REG_QUEUE_DRIVER_LOW, (uint32_t)avail);
  virtio_write32(dev, REG_QUEUE_DRIVER_HIGH, (uint32_t)(avail >> 32));
  virtio_write32(dev, REG_QUEUE_DEVICE_LOW, (uint32_t)used);
  virtio_write32(dev, REG_QUEUE_DEVICE_HIGH, (uint32_t)(used >> 32));
  virtio_write32(dev, REG_QUEUE_READY, 1);
  if (virtio_read32(dev, REG_QUEUE_READY) != 1) fail_value("queue did not become ready:", index);
}

void virtio_driver_ok(struct virtio_dev *dev) {
  uint32_t status = virtio_status(dev);
  virtio_write32(dev, REG_STATUS, status | STATUS_DRIVER_OK);
  status = virtio_status(dev);
  if (status & STATUS_NEEDS_RESET) fail("device needs a reset right after DRIVER_OK");
  if (!(status & STATUS_DRIVER_OK)) fail("device did not take DRIVER_OK");
}

uint16_t virtq_submit(struct virtq *q, const struct vbuf *bufs, int count, void *cookie) {
  if (count <= 0 || count > q->num_free) fail_value("virtqueue out of descriptors, queue", q->index);
  uint16_t head = q->free_head;
  uint16_t index = head;
  for (int i = 0; i < count; i++) {
    struct virtq_desc *d = &q->desc[index];
    d->addr = (uintptr_t)bufs[i].addr;
    d->len = bufs[i].len;
    d->flags = (uint16_t)((bufs[i].writable ? VIRTQ_DESC_F_WRITE : 0) |
                          (i + 1 < count ? VIRTQ_DESC_F_NEXT : 0));
    if (i + 1 < count) index = d->next;
  }
  q->free_head = q->desc[index].next;
  q->num_free = (uint16_t)(q->num_free - count);
  q->cookie[head] = cookie;
  q->avail.ring[q->avail.idx % VIRTQ_SIZE] = head;
  /* The descriptors and ring slot are written before the index that publishes them. */
  compiler_barrier();
  *(volatile uint16_t *)&q->avail.idx = (uint16_t)(q->avail.idx + 1);
  return head;
}

void virtq_notify(struct virtq *q) {
  compiler_barrier();
  virtio_write32(q->dev, REG_QUEUE_NOTIFY, q->index);
}

static uint16_t used_idx(const struct virtq *q) {
  uint16_t idx = *(const volatile uint16_t *)&q->used.idx;
  compiler_barrier();  /* ring elements are read after the index */
  return idx;
}

uint16_t virtq_used_pending(const struct virtq *q) {
  return (uint16_t)(used_idx(q) - q->last_used);
}

void *virtq_peek_used(const struct virtq *q, uint16_t nth, uint32_t *len) {
  const volatile struct virtq_used_elem *e = &q->used.ring[(uint16_t)(q->last_used + nth) % VIRTQ_SIZE];
  uint32_t id = e->id;
  if (id >= VIRTQ_SIZE) fail_value("device returned descriptor id", id);
  if (len) *len = e->len;
  return q->cookie[id];
}

int virtq_take_used(struct virtq *q, uint32_t *len, void **cookie) {
  uint16_t pending = virtq_used_pending(q);
  if (pending == 0) return 0;
  if (pending > VIRTQ_SIZE) fail_value("used index ran ahead by", pending);
  const volatile struct virtq_used_elem *e = &q->used.ring[q->last_used % VIRTQ_SIZE];
  uint32_t id = e->id;
  uint32_t used_len = e->len;
  if (id >= VIRTQ_SIZE) fail_value("device returned descriptor id", id);
  q->last_used++;
  /* Give the chain's descriptors back to the free list. */
  uint16_t tail = (uint16_t)id;
  uint16_t count = 1;
  while ((q->desc[tail].flags & VIRTQ_DESC_F_NEXT) && count <= VIRTQ_SIZE) {
    tail = q->desc[tail].next;
    count++;
  }
  q->desc[tail].next = q->free_head;
  q->free_head = (uint16_t)id;
  q->num_free = (uint16_t)(q->num_free + count);
  if (len) *len = used_len;
  if (cookie) *cookie = q->cookie[id];
  return 1;
}

int virtq_wait_used(struct virtq *q, uint32_t *len, void **cookie, uint64_t spins) {
  for (uint64_t i = 0; i < spins; i++) {
    if (virtq_take_used(q, len, cookie)) return 1;
    cpu_relax();
  }
  return 0;
}

uint32_t virtq_transact(struct virtq *q, const struct vbuf *bufs, int count) {
  static char token;
  virtq_submit(q, bufs, count, &token);
  virtq_notify(q);
  uint32_t len;
  void *cookie;
  /* The VMM serves a notify before the guest runs on; the bound is for a broken device. */
  if (!virtq_wait_used(q, &len, &cookie, 5000000)) fail_value("no used buffer on queue", q->index);
  if (cookie != &token) fail_value("an unexpected chain came back on queue", q->index);
  return len;
}
