/* Host-side unit tests of the disk lookup by serial (blkdev.c): the Unit Serial Number VPD
 * page parser (well-formed, padded, truncated, oversized, foreign pages) and the scan of a
 * fake /sys/block holding virtio-blk and SCSI disks, with and without the virtio-blk serials
 * remembered at agent start (run under ASan/UBSan). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blkdev.h"

#include "check.h"

/* A VPD page 0x80 with `serial` as its payload and page length `declared`. */
static size_t vpd(unsigned char *buf, const char *serial, size_t declared)
{
    size_t n = strlen(serial);
    buf[0] = 0x00; /* direct-access block device */
    buf[1] = 0x80;
    buf[2] = (unsigned char)(declared >> 8);
    buf[3] = (unsigned char)declared;
    memcpy(buf + 4, serial, n);
    return 4 + n;
}

static void test_vpd(void)
{
    unsigned char page[600];
    char out[BLKDEV_SERIAL_MAX];
    size_t len = vpd(page, "pod3-img", 8);
    CHECK(blkdev_vpd_pg80_serial(page, len, out, sizeof out) == 8 && strcmp(out, "pod3-img") == 0);
    /* Padding with spaces and NULs on either side is not part of the serial. */
    len = vpd(page, "  abc  ", 7);
    CHECK(blkdev_vpd_pg80_serial(page, len, out, sizeof out) == 3 && strcmp(out, "abc") == 0);
    len = vpd(page, "abc", 3);
    page[len] = 0;
    page[3] = 4;
    CHECK(blkdev_vpd_pg80_serial(page, len + 1, out, sizeof out) == 3 && strcmp(out, "abc") == 0);
    /* Bytes past the declared length are ignored. */
    len = vpd(page, "abcdef", 3);
    CHECK(blkdev_vpd_pg80_serial(page, len, out, sizeof out) == 3 && strcmp(out, "abc") == 0);
    /* A length beyond the buffer, a header cut short, another page, empty, unprintable. */
    len = vpd(page, "abc", 4);
    CHECK(blkdev_vpd_pg80_serial(page, len, out, sizeof out) == -1);
    for (size_t cut = 0; cut < 4; cut++)
        CHECK(blkdev_vpd_pg80_serial(page, cut, out, sizeof out) == -1);
    len = vpd(page, "abc", 3);
    page[1] = 0x83;
    CHECK(blkdev_vpd_pg80_serial(page, len, out, sizeof out) == -1);
    len = vpd(page, "", 0);
    CHECK(blkdev_vpd_pg80_serial(page, len, out, sizeof out) == -1);
    len = vpd(page, "   ", 3);
    CHECK(blkdev_vpd_pg80_serial(page, len, out, sizeof out) == -1);
    len = vpd(page, "a\tb", 3);
    CHECK(blkdev_vpd_pg80_serial(page, len, out, sizeof out) == -1);
    len = vpd(page, "ab\xc3\xa9", 4);
    CHECK(blkdev_vpd_pg80_serial(page, len, out, sizeof out) == -1);
    /* Too long for the output: refused, never truncated into another serial. */
    len = vpd(page, "abcdefgh", 8);
    CHECK(blkdev_vpd_pg80_serial(page, len, out, 8) == -1);
    CHECK(blkdev_vpd_pg80_serial(page, len, out, 9) == 8 && strcmp(out, "abcdefgh") == 0);
    CHECK(blkdev_vpd_pg80_serial(NULL, 10, out, sizeof out) == -1);
    /* The longest page length the header can state, with the bytes to back it. */
    memset(page, 'x', sizeof page);
    page[1] = 0x80;
    page[2] = 0xff;
    page[3] = 0xff;
    CHECK(blkdev_vpd_pg80_serial(page, sizeof page, out, sizeof out) == -1);
}

static char root[256];

static void put(const char *rel, const void *data, size_t len)
{
    char path[512], dir[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    snprintf(dir, sizeof dir, "%s", path);
    for (char *p = dir + strlen(root) + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        mkdir(dir, 0700);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fwrite(data, 1, len, f);
    fclose(f);
}

static void test_scan(void)
{
    snprintf(root, sizeof root, "/tmp/smolvm-blkdev-test-XXXXXX");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        exit(2);
    }
    char sys[300], devdir[300], dev[64];
    snprintf(sys, sizeof sys, "%s/sys", root);
    snprintf(devdir, sizeof devdir, "%s/dev", root);
    unsigned char page[64];
    put("sys/vda/serial", "slot0\n", 6);
    put("sys/vdb/serial", "image", 5);
    size_t len = vpd(page, "pod0-rw", 7);
    put("sys/sda/device/vpd_pg80", page, len);
    len = vpd(page, "pod0-img   ", 11);
    put("sys/sdb/device/vpd_pg80", page, len);
    len = vpd(page, "pod9-img", 30); /* malformed: length beyond the file */
    put("sys/sdc/device/vpd_pg80", page, len);
    put("sys/sdd/serial", "pod7-img", 8); /* an sd disk's serial is only its VPD page */
    mkdir(devdir, 0700);
    put("dev/vda", "", 0);
    put("dev/sdb", "", 0);

    char want[512];
    CHECK(blkdev_find_by_serial(sys, devdir, "slot0", dev, sizeof dev) == 0);
    snprintf(want, sizeof want, "%s/vda", devdir);
    CHECK(strcmp(dev, want) == 0);
    CHECK(blkdev_find_by_serial(sys, devdir, "pod0-img", dev, sizeof dev) == 0);
    snprintf(want, sizeof want, "%s/sdb", devdir);
    CHECK(strcmp(dev, want) == 0);
    CHECK(blkdev_find_by_serial(sys, devdir, "pod0-rw", dev, sizeof dev) == 0);
    CHECK(blkdev_find_by_serial(sys, devdir, "pod9-img", dev, sizeof dev) == -1);
    CHECK(blkdev_find_by_serial(sys, devdir, "pod7-img", dev, sizeof dev) == -1);
    CHECK(blkdev_find_by_serial(sys, devdir, "pod0", dev, sizeof dev) == -1);
    CHECK(blkdev_find_by_serial(sys, devdir, "", dev, sizeof dev) == -1);
    /* A device path that does not fit the caller's buffer is not found, never cut short. */
    CHECK(blkdev_find_by_serial(sys, devdir, "slot0", dev, 8) == -1);
    char nosys[320];
    snprintf(nosys, sizeof nosys, "%s/nosys", root);
    CHECK(blkdev_find_by_serial(nosys, devdir, "slot0", dev, sizeof dev) == -1);

    /* Waiting: found at once when the node exists; sda's node is missing, so it times out. */
    CHECK(blkdev_wait_by_serial(sys, devdir, "pod0-img", 50, dev, sizeof dev) == 0);
    CHECK(blkdev_wait_by_serial(sys, devdir, "pod0-rw", 30, dev, sizeof dev) == -1);
    CHECK(blkdev_wait_by_serial(sys, devdir, "absent", 30, dev, sizeof dev) == -1);
    put("dev/sda", "", 0);
    CHECK(blkdev_wait_by_serial(sys, devdir, "pod0-rw", 30, dev, sizeof dev) == 0);

    /* Remembered at agent start: the virtio-blk disks' serials are read once (a later change
     * of the file is not seen); SCSI disks, and disks that came later, are still scanned. */
    blkdev_remember(sys);
    put("sys/vda/serial", "changed", 7);
    CHECK(blkdev_find_by_serial(sys, devdir, "slot0", dev, sizeof dev) == 0);
    snprintf(want, sizeof want, "%s/vda", devdir);
    CHECK(strcmp(dev, want) == 0);
    CHECK(blkdev_find_by_serial(sys, devdir, "changed", dev, sizeof dev) == -1);
    CHECK(blkdev_find_by_serial(sys, devdir, "image", dev, sizeof dev) == 0);
    CHECK(blkdev_find_by_serial(sys, devdir, "slot0", dev, 8) == -1);
    CHECK(blkdev_find_by_serial(sys, devdir, "pod0-img", dev, sizeof dev) == 0);
    snprintf(want, sizeof want, "%s/sdb", devdir);
    CHECK(strcmp(dev, want) == 0);
    len = vpd(page, "pod1-img", 8);
    put("sys/sde/device/vpd_pg80", page, len);
    put("sys/vdc/serial", "late", 4);
    CHECK(blkdev_find_by_serial(sys, devdir, "pod1-img", dev, sizeof dev) == 0);
    CHECK(blkdev_find_by_serial(sys, devdir, "late", dev, sizeof dev) == 0);
    snprintf(want, sizeof want, "%s/vdc", devdir);
    CHECK(strcmp(dev, want) == 0);
    CHECK(blkdev_wait_by_serial(sys, devdir, "slot0", 30, dev, sizeof dev) == 0);
    /* Another directory: nothing remembered applies. */
    CHECK(blkdev_find_by_serial(nosys, devdir, "slot0", dev, sizeof dev) == -1);
    /* Remembering a directory that does not exist forgets everything. */
    blkdev_remember(nosys);
    CHECK(blkdev_find_by_serial(sys, devdir, "slot0", dev, sizeof dev) == -1);
    CHECK(blkdev_find_by_serial(sys, devdir, "changed", dev, sizeof dev) == 0);

    char cmd[320];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", root);
}

int main(void)
{
    test_vpd();
    test_scan();
    printf("test_blkdev: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
