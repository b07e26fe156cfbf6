/* Finding a guest disk by the serial the host gave it. Two kinds of disks carry one:
 *  - virtio-blk (fixed slots): /sys/block/vdX/serial, the text itself;
 *  - SCSI disks (a pod VM's disks, hot-added on the virtio-scsi controller):
 *    /sys/block/sdX/device/vpd_pg80, the raw Unit Serial Number VPD page (0x80).
 * A hot-added disk appears a moment after the host's device_add (the driver scans the new
 * target in a work item), so the lookup waits, bounded. */
#ifndef SMOLVM_BLKDEV_H
#define SMOLVM_BLKDEV_H

#include <stddef.h>

/* Longest serial looked for (QEMU: virtio-blk keeps 20 bytes, scsi-hd's VPD page 36). */
#define BLKDEV_SERIAL_MAX 64
/* How long a disk named by the host may take to appear in the guest. */
#define BLKDEV_WAIT_MS 5000

/* The serial in a Unit Serial Number VPD page (SPC-4 7.8.19: byte 1 the page code 0x80,
 * bytes 2-3 the big-endian page length n, then n bytes of ASCII, maybe padded with spaces
 * or NULs), trimmed, into out[cap]. Its length, or -1 for a malformed page (short, another
 * page code, a length beyond the buffer, a byte that is not printable ASCII, too long for
 * `cap`, or empty). */
int blkdev_vpd_pg80_serial(const unsigned char *page, size_t len, char *out, size_t cap);

/* virtio-blk disks blkdev_remember keeps. */
#define BLKDEV_MAX_KNOWN 16

/* Agent start: remembers the names and serials of the virtio-blk disks (vdX) in `sys_block`.
 * Those are the VM's fixed slots: a virtio-mmio device cannot be unplugged and its serial
 * is fixed when QEMU or the VMM creates it, and a VM restored from a template has the
 * template's slots, serials included (they are part of the template key). Reading a serial
 * is a request to the device: in a VM just restored under TCG the first one costs ~8 ms. */
void blkdev_remember(const char *sys_block);

/* The disk whose serial is `serial` in `sys_block` (/sys/block): a remembered virtio-blk disk
 * of that directory, else a scan of the others (SCSI disks, hot-added: their serial is
 * always read). "<dev_dir>/<name>" into dev[cap]. 0 when found, -1 when not. */
int blkdev_find_by_serial(const char *sys_block, const char *dev_dir, const char *serial, char *dev, size_t cap);

/* As blkdev_find_by_serial, retried until the disk and its device node exist or `timeout_ms`
 * passed. 0 when found, -1 when not. */
int blkdev_wait_by_serial(const char *sys_block, const char *dev_dir, const char *serial, int timeout_ms,
                          char *dev, size_t cap);

#endif
