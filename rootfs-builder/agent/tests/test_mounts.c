/* Host-side unit tests of mounts_validate for binds through the VM's one 9p share: the
 * share_subpath field is decoded, and only a strictly relative, dot-dot-free subpath passes
 * (run under ASan/UBSan). Nothing here mounts anything. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_pb.h"
#include "mounts.h"
#include "pb.h"
#include "ttrpc.h"

#include "check.h"

/* A CreateContainerRequest holding one bind mount of /data with the given sources. */
static void build(pb_writer *w, const char *subpath, const char *tag)
{
    pb_writer mounts, mount;
    pb_writer_init(w);
    pb_put_string_field(w, 1, "c1");
    pb_writer_init(&mounts);
    pb_writer_init(&mount);
    pb_put_string_field(&mount, 1, "/data");
    pb_put_string_field(&mount, 2, "bind");
    pb_put_uint_field(&mount, 4, 1); /* MS_RDONLY */
    if (tag)
        pb_put_string_field(&mount, 9, tag);
    if (subpath)
        pb_put_string_field(&mount, 10, subpath);
    pb_put_message_field(&mounts, 1, &mount);
    pb_writer_free(&mount);
    pb_put_message_field(w, 9, &mounts);
    pb_writer_free(&mounts);
}

/* mounts_validate's code for a request whose only mount has this subpath (and tag). */
static int validate(const char *subpath, const char *tag, char *err, size_t errcap)
{
    pb_writer w;
    build(&w, subpath, tag);
    struct create_container_request req;
    int rc = agent_decode_create(w.buf, w.len, &req);
    pb_writer_free(&w);
    if (rc < 0)
        return -1;
    rc = mounts_validate(&req, err, errcap);
    agent_create_free(&req);
    return rc;
}

static void test_decode(void)
{
    pb_writer w;
    build(&w, "3", NULL);
    struct create_container_request req;
    CHECK(agent_decode_create(w.buf, w.len, &req) == 0);
    CHECK(req.has_mounts && req.nmounts == 1 && req.mounts[0].share_subpath &&
          strcmp(req.mounts[0].share_subpath, "3") == 0 && !req.mounts[0].share_tag && !req.mounts[0].file.present);
    agent_create_free(&req);
    pb_writer_free(&w);

    /* Longer than 255 bytes: refused by the decoder. */
    char longpath[300];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = 0;
    build(&w, longpath, NULL);
    CHECK(agent_decode_create(w.buf, w.len, &req) < 0);
    pb_writer_free(&w);

    /* An embedded NUL: refused by the decoder. */
    pb_writer mounts, mount;
    pb_writer_init(&w);
    pb_writer_init(&mounts);
    pb_writer_init(&mount);
    pb_put_string_field(&mount, 1, "/data");
    pb_put_string_field(&mount, 2, "bind");
    pb_put_bytes_field(&mount, 10, "a\0b", 3);
    pb_put_message_field(&mounts, 1, &mount);
    pb_put_message_field(&w, 9, &mounts);
    CHECK(agent_decode_create(w.buf, w.len, &req) < 0);
    pb_writer_free(&mount);
    pb_writer_free(&mounts);
    pb_writer_free(&w);
}

static void test_validate(void)
{
    char err[600];
    static const char *const good[] = { "0", "17", "a/b", "vol-1/sub_dir.x", "..a", "a..", "...", ".hidden" };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        err[0] = 0;
        int rc = validate(good[i], NULL, err, sizeof err);
        if (rc != RPC_OK)
            fprintf(stderr, "good subpath \"%s\" refused: %s\n", good[i], err);
        CHECK(rc == RPC_OK);
    }
    static const char *const bad[] = { "", "/", "/0", "0/", "..", "../0", "0/..", "0/../1", ".", "./0", "0/.",
                                       "0//1", "a b", "a\\b", "a:b", "0\n", "\xc3\xa9" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        int rc = validate(bad[i], NULL, err, sizeof err);
        if (rc != RPC_INVALID_ARGUMENT)
            fprintf(stderr, "bad subpath \"%s\" accepted (rc %d)\n", bad[i], rc);
        CHECK(rc == RPC_INVALID_ARGUMENT);
        /* "" is not even sent (proto3 leaves empty strings out): then no source is named. */
        CHECK(strstr(err, "mount /data") != NULL &&
              strstr(err, bad[i][0] ? "share subpath" : "exactly one source") != NULL);
    }
    /* Exactly one source: a subpath and a tag together are refused, as is no source at all. */
    CHECK(validate("0", "smolvm9p0", err, sizeof err) == RPC_INVALID_ARGUMENT && strstr(err, "exactly one source"));
    CHECK(validate(NULL, NULL, err, sizeof err) == RPC_INVALID_ARGUMENT && strstr(err, "exactly one source"));
    CHECK(validate(NULL, "smolvm9p0", err, sizeof err) == RPC_OK);
}

/* A tmpfs mount with a subpath: refused (filesystem mounts take no host source). */
static void test_fs_mount_with_subpath(void)
{
    pb_writer w, mounts, mount;
    pb_writer_init(&w);
    pb_writer_init(&mounts);
    pb_writer_init(&mount);
    pb_put_string_field(&mount, 1, "/tmp");
    pb_put_string_field(&mount, 2, "tmpfs");
    pb_put_string_field(&mount, 10, "0");
    pb_put_message_field(&mounts, 1, &mount);
    pb_put_message_field(&w, 9, &mounts);
    struct create_container_request req;
    CHECK(agent_decode_create(w.buf, w.len, &req) == 0);
    char err[600];
    CHECK(mounts_validate(&req, err, sizeof err) == RPC_INVALID_ARGUMENT && strstr(err, "takes no host source"));
    agent_create_free(&req);
    pb_writer_free(&mount);
    pb_writer_free(&mounts);
    pb_writer_free(&w);
}

int main(void)
{
    test_decode();
    test_validate();
    test_fs_mount_with_subpath();
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
