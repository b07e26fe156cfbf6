/* A minimal virtio-mmio (version 2) driver: device discovery and checks, the status/feature
   handshake, split virtqueues with a descriptor free list, notify, and polling the used ring
   (interrupts stay off: the guest never takes one). */
#pragma once

#include <stdint.h>

#include "cmdline.h"

#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_RNG 4
#define VIRTIO_ID_VSOCK 19

#define VIRTIO_F_VERSION_1 32
#define FEATURE(bit) (1ULL << (bit))

#define VIRTQ_SIZE 16
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

/* Device status bits. */
#define STATUS_ACKNOWLEDGE 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8
#define STATUS_NEEDS_RESET 0x40
#define STATUS_FAILED 0x80

struct virtq_desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};

struct virtq_avail {
  uint16_t flags;
  uint16_t idx;
  uint16_t ring[VIRTQ_SIZE];
  uint16_t used_event;
};

struct virtq_used_elem {
  uint32_t id;
  uint32_t len;
};

struct virtq_used {
  uint16_t flags;
  uint16_t idx;
  struct virtq_used_elem ring[VIRTQ_SIZE];
  uint16_t avail_event;
};

struct virtio_dev;

struct virtq {
  struct virtq_desc desc[VIRTQ_SIZE] __attribute__((aligned(16)));
  struct virtq_avail avail __attribute__((aligned(2)));
  struct virtq_used used __attribute__((aligned(4)));
  void *cookie[VIRTQ_SIZE];  /* what the driver attached to each chain, by head */
  struct virtio_dev *dev;
  uint32_t index;
  uint16_t free_head;
  uint16_t num_free;
  uint16_t last_used;
};

struct virtio_dev {
  uint64_t base;
  uint32_t gsi;
  uint32_t device_id;
  uint64_t features;  /* negotiated */
};

/* One buffer of a chain: device-readable unless `writable`. */
struct vbuf {
  const void *addr;
  uint32_t len;
  int writable;
};

/* Finds the `nth` (0-based) device with `device_id` among the command line's slots, checking
   every slot's magic and version on the way. Returns 0 when there is none. */
int virtio_find(const char *cmdline, uint32_t device_id, int nth, struct virtio_dev *dev);

uint32_t virtio_read32(const struct virtio_dev *dev, uint32_t offset);
void virtio_write32(const struct virtio_dev *dev, uint32_t offset, uint32_t value);
uint8_t virtio_config8(const struct virtio_dev *dev, uint32_t offset);
uint32_t virtio_config32(const struct virtio_dev *dev, uint32_t offset);
/* A 64-bit config field read as two halves, retried until the config generation holds. */
uint64_t virtio_config64(const struct virtio_dev *dev, uint32_t offset);
uint64_t virtio_device_features(const struct virtio_dev *dev);

/* Reset, ACKNOWLEDGE, DRIVER, features (`wanted` & offered; VERSION_1 required), FEATURES_OK
   (checked it stuck). Fails the guest on any refusal. */
void virtio_begin_init(struct virtio_dev *dev, uint64_t wanted);
/* Sets up queue `index` with VIRTQ_SIZE entries: sizes, ring addresses, QueueReady. */
void virtq_setup(struct virtio_dev *dev, struct virtq *q, uint32_t index);
/* DRIVER_OK, then checks the device did not ask for a reset. */
void virtio_driver_ok(struct virtio_dev *dev);
/* Writes 0 to Status. */
void virtio_reset(struct virtio_dev *dev);
uint32_t virtio_status(const struct virtio_dev *dev);

/* Chains `count` buffers, makes the chain available and returns its head; fails the guest when
   the queue lacks free descriptors. Does not notify. */
uint16_t virtq_submit(struct virtq *q, const struct vbuf *bufs, int count, void *cookie);
void virtq_notify(struct virtq *q);
/* Takes the next used chain if there is one: returns 1 with its length and cookie, and frees
   its descriptors. */
int virtq_take_used(struct virtq *q, uint32_t *len, void **cookie);
/* How many used chains are waiting; `nth` peeks at the cookie of one without taking it. */
uint16_t virtq_used_pending(const struct virtq *q);
void *virtq_peek_used(const struct virtq *q, uint16_t nth, uint32_t *len);
/* Polls until the next used chain arrives (at most `spins` polls): returns 1 as above, or 0 on
   timeout. */
int virtq_wait_used(struct virtq *q, uint32_t *len, void **cookie, uint64_t spins);
/* Submit, notify and wait (bounded): the used length. Fails the guest on timeout or when
   another chain comes back first. */
uint32_t virtq_transact(struct virtq *q, const struct vbuf *bufs, int count);
