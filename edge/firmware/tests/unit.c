/* fs_unit: the core's building blocks, with canary bytes after every output buffer.
 * The protocol as a whole is tested from Python (tests/test_firmware.py). */
#include <math.h>
#include <string.h>

#include "fedsim_port.h"
#include "fs_device.h"
#include "fs_frame.h"
#include "fs_learner.h"
#include "fs_test.h"

#define CANARY 0xA5u
#define SWEEP_MAX 1100u

/* A port that keeps the last reply. */
static uint8_t s_reply[FS_WIRE_MAX];
static size_t s_reply_len;
static int s_replies;
static const fs_board s_board = {"unit", "host", 0, 0, 0, 0, 0, NULL};
const fs_board *fs_port_board(void) { return &s_board; }
uint32_t fs_port_time_us(void) { return FS_NOT_MEASURED; }
/* fs_port_energy_uj, fs_port_sensor_sample: ports/common/no_sensors.c */
void fs_port_write(const uint8_t *data, size_t len) {
    memcpy(s_reply, data, len);
    s_reply_len = len;
    s_replies++;
}

static void test_crc(void) {
    FS_CHECK(fs_crc16((const uint8_t *)"123456789", 9, 0xFFFFu) == 0x29B1u);
}

static void test_cobs_examples(void) {
    static const uint8_t raw[] = {0x11, 0x22, 0x00, 0x33};
    static const uint8_t enc[] = {0x03, 0x11, 0x22, 0x02, 0x33};
    uint8_t out[16];
    fs_result r = fs_cobs_encode(raw, sizeof raw, out, sizeof out);
    FS_CHECK(r.status == FS_FRAME_OK && r.len == sizeof enc && memcmp(out, enc, r.len) == 0);
    r = fs_cobs_decode(enc, sizeof enc, out, sizeof out);
    FS_CHECK(r.status == FS_FRAME_OK && r.len == sizeof raw && memcmp(out, raw, r.len) == 0);
    FS_CHECK(fs_cobs_decode(enc, 2, out, sizeof out).status == FS_FRAME_COBS); /* block cut */
}

/* Every length 0..SWEEP_MAX, with and without zeros: round trip, bound, no write past cap. */
static void test_cobs_sweep(void) {
    static uint8_t data[SWEEP_MAX], enc[FS_COBS_MAX(SWEEP_MAX) + 1u], dec[SWEEP_MAX + 1u];
    size_t n, i, bound;
    int zeros;
    fs_result r;
    for (zeros = 0; zeros < 2; zeros++) {
        for (n = 0; n <= SWEEP_MAX; n++) {
            for (i = 0; i < n; i++) {
                data[i] = (uint8_t)(zeros && i % 97u == 3u ? 0 : 1u + i % 255u);
            }
            bound = FS_COBS_MAX(n);
            enc[bound] = CANARY;
            r = fs_cobs_encode(data, n, enc, bound);
            FS_CHECK(r.status == FS_FRAME_OK && r.len <= bound && enc[bound] == CANARY);
            FS_CHECK(memchr(enc, 0, r.len) == NULL);
            memset(dec, CANARY, sizeof dec);
            FS_CHECK(fs_cobs_decode(enc, r.len, dec, n).len == n && memcmp(dec, data, n) == 0);
            FS_CHECK(dec[n] == CANARY);
            if (n > 0) { /* one byte short: refused, nothing written past the end */
                dec[n - 1] = CANARY;
                FS_CHECK(fs_cobs_decode(enc, r.len, dec, n - 1).status == FS_FRAME_OVERSIZE);
                FS_CHECK(dec[n - 1] == CANARY);
                enc[r.len - 1] = CANARY;
                FS_CHECK(fs_cobs_encode(data, n, enc, r.len - 1).status == FS_FRAME_OVERSIZE);
                FS_CHECK(enc[r.len - 1] == CANARY);
            }
        }
    }
}

static void test_frame_checks(void) {
    static const uint8_t payload[] = {1, 0, 2};
    uint8_t wire[64], raw[64];
    fs_header h = {FS_VERSION, FS_TRAIN, 0x1234, sizeof payload, 0, 0}, got;
    fs_result w = fs_frame_encode(&h, payload, wire, sizeof wire);
    fs_result r = fs_cobs_decode(wire, w.len - 1, raw, sizeof raw);
    FS_CHECK(w.status == FS_FRAME_OK && wire[w.len - 1] == 0);
    FS_CHECK(fs_frame_check(raw, r.len, &got) == FS_FRAME_OK && got.sequence == 0x1234);
    FS_CHECK(got.length == 3 && memcmp(raw + FS_HEADER_SIZE, payload, 3) == 0);
    FS_CHECK(fs_frame_check(raw, 9, &got) == FS_FRAME_SHORT);
    raw[FS_HEADER_SIZE] ^= 1u;
    FS_CHECK(fs_frame_check(raw, r.len, &got) == FS_FRAME_CRC);
    h.version = 2;
    w = fs_frame_encode(&h, payload, wire, sizeof wire);
    r = fs_cobs_decode(wire, w.len - 1, raw, sizeof raw);
    FS_CHECK(fs_frame_check(raw, r.len, &got) == FS_FRAME_VERSION && got.version == 2);
    h.version = FS_VERSION;
    h.length = 2; /* the header lies about the payload */
    w = fs_frame_encode(&h, payload, wire, sizeof wire);
    FS_CHECK(w.status == FS_FRAME_OK);
}

/* The hand-computed step of tests/test_tinyol.py (softmax, 3 features, 2 classes, lr 0.5). */
static void test_softmax_step(void) {
    float w[8] = {0.1f, -0.2f, 0.3f, 0.0f, 0.4f, -0.1f, 0.05f, -0.05f}, scratch[2];
    const float x[3] = {1.0f, 2.0f, -1.0f};
    fs_head h = {2, 3, FS_LOSS_SOFTMAX, 0.5f, w, scratch};
    const double z0 = -0.55, z1 = 0.85, p1 = 1.0 / (1.0 + exp(z0 - z1));
    float loss = fs_head_step(&h, x, 1, NULL);
    FS_CHECK(fabs(loss + log(p1)) < 1e-6);
    FS_CHECK(fabs(w[0] - (0.1 - 0.5 * (1.0 - p1) * 1.0)) < 1e-6);  /* g0 = p0 */
    FS_CHECK(fabs(w[4] - (0.4 - 0.5 * (p1 - 1.0) * 2.0)) < 1e-6);  /* g1 = p1 - 1 */
    FS_CHECK(fabs(w[7] - (-0.05 - 0.5 * (p1 - 1.0))) < 1e-6);
}

static void test_mse_step(void) {
    float w[3] = {1.0f, -1.0f, 0.5f}, scratch[1];
    const float x[2] = {2.0f, 1.0f}, y[1] = {1.0f};
    fs_head h = {1, 2, FS_LOSS_MSE, 0.1f, w, scratch};
    float loss = fs_head_step(&h, x, 0, y); /* z = 2 - 1 + 0.5 = 1.5, g = 0.5 */
    FS_CHECK(fabsf(loss - 0.125f) < 1e-7f);
    FS_CHECK(fabsf(w[0] - 0.9f) < 1e-7f && fabsf(w[1] + 1.05f) < 1e-7f);
    FS_CHECK(fabsf(w[2] - 0.45f) < 1e-7f);
}

/* An oversize run, then a HELLO: dropped up to the 0x00, then answered. */
static void test_resync(void) {
    uint8_t hello[32];
    fs_header h = {FS_VERSION, FS_HELLO, 7, 0, 0, 0};
    fs_result w = fs_frame_encode(&h, NULL, hello, sizeof hello);
    size_t i;
    fs_device_init();
    s_replies = 0;
    for (i = 0; i < 3u * FS_WIRE_MAX; i++) {
        fs_device_feed((uint8_t)(1u + i % 200u));
    }
    fs_device_feed(0);
    FS_CHECK(s_replies == 0);
    for (i = 0; i < w.len; i++) {
        fs_device_feed(hello[i]);
    }
    FS_CHECK(s_replies == 1 && s_reply_len > 30 && s_reply[s_reply_len - 1] == 0);
}

int main(void) {
    test_crc();
    test_cobs_examples();
    test_cobs_sweep();
    test_frame_checks();
    test_softmax_step();
    test_mse_step();
    test_resync();
    return fs_test_report("fs_unit");
}
