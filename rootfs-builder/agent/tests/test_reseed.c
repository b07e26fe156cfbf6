/* Host-side unit test of the Reseed RPC's wire format (agent_pb.c): decoding, malformed and
 * truncated input, the response encoding (run under ASan/UBSan). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_pb.h"
#include "pb.h"

#include "check.h"

static void test_decode(void)
{
    uint8_t entropy[48];
    for (size_t i = 0; i < sizeof entropy; i++)
        entropy[i] = (uint8_t)(i * 7 + 1);
    pb_writer w;
    pb_writer_init(&w);
    pb_put_bytes_field(&w, 1, entropy, sizeof entropy);
    pb_put_uint_field(&w, 2, 1700000000123456789ull);
    pb_put_string_field(&w, 3, "web-1");
    pb_put_uint_field(&w, 9, 5); /* an unknown field is skipped */
    struct reseed_request r;
    CHECK(agent_decode_reseed(w.buf, w.len, &r) == 0);
    CHECK(r.entropy_len == sizeof entropy && memcmp(r.entropy, entropy, sizeof entropy) == 0);
    CHECK(r.host_time_unix_nano == 1700000000123456789ull);
    CHECK(r.hostname != NULL && strcmp(r.hostname, "web-1") == 0);
    agent_reseed_free(&r);
    CHECK(r.hostname == NULL);
    /* Every truncation is rejected and leaves nothing allocated. */
    for (size_t cut = 1; cut < w.len; cut++) {
        int rc = agent_decode_reseed(w.buf, cut, &r);
        if (rc == 0)
            agent_reseed_free(&r);
        else
            CHECK(r.hostname == NULL && r.entropy == NULL);
    }
    CHECK(agent_decode_reseed(w.buf, w.len - 1, &r) < 0);
    pb_writer_free(&w);

    /* Empty message: all absent (the handler then refuses the missing entropy). */
    CHECK(agent_decode_reseed(NULL, 0, &r) == 0 && r.entropy_len == 0 && r.hostname == NULL);

    /* Wrong wire types. */
    const uint8_t entropy_as_varint[] = { 0x08, 0x01 };
    CHECK(agent_decode_reseed(entropy_as_varint, sizeof entropy_as_varint, &r) < 0);
    const uint8_t time_as_bytes[] = { 0x12, 0x01, 0x00 };
    CHECK(agent_decode_reseed(time_as_bytes, sizeof time_as_bytes, &r) < 0);
    /* A hostname with an embedded NUL, and one longer than the decoder's bound. */
    const uint8_t nul_host[] = { 0x1a, 0x03, 'a', 0, 'b' };
    CHECK(agent_decode_reseed(nul_host, sizeof nul_host, &r) < 0 && r.hostname == NULL);
    char long_host[2000];
    memset(long_host, 'h', sizeof long_host - 1);
    long_host[sizeof long_host - 1] = 0;
    pb_writer_init(&w);
    pb_put_string_field(&w, 3, long_host);
    CHECK(agent_decode_reseed(w.buf, w.len, &r) < 0 && r.hostname == NULL);
    pb_writer_free(&w);
    /* A length past the end. */
    const uint8_t past_end[] = { 0x0a, 0x40, 1, 2, 3 };
    CHECK(agent_decode_reseed(past_end, sizeof past_end, &r) < 0);
}

static void test_response(void)
{
    pb_writer w;
    pb_writer_init(&w);
    agent_encode_reseed_response(&w, true, 64);
    const uint8_t want[] = { 0x08, 0x01, 0x10, 0x40 };
    CHECK(w.len == sizeof want && memcmp(w.buf, want, sizeof want) == 0);
    pb_writer_free(&w);
    pb_writer_init(&w);
    agent_encode_reseed_response(&w, false, 0);
    CHECK(w.len == 0); /* proto3: zero values are omitted */
    pb_writer_free(&w);
}

int main(void)
{
    test_decode();
    test_response();
    printf("reseed: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
