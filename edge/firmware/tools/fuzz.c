/* fs_fuzz: random and mutated frames thrown at the decoder and the whole device (build it with
 * ASan + UBSan: they catch what the checks below cannot).
 *
 *   fs_fuzz [--seed S] [--frames N]   N frames (default 100000), deterministic for a seed
 *   fs_fuzz --stdin                    the raw bytes of stdin, after a head is loaded
 *
 * Frames start valid (every message type, a head of random shape loaded most of the time) and
 * are then mutated: bit flips, truncation, dropped and inserted bytes, payloads cut or padded
 * behind a recomputed CRC (so they reach the handlers), oversize length fields, oversize frames,
 * other versions, unknown types, replays, garbage. Every reply is checked: one reply per frame
 * that checks (none otherwise), a valid frame with the request's sequence and type (or ERROR),
 * a replay byte-identical and without training, TRAIN steps counted. Exit 0 when all held.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedsim_port.h"
#include "fs_device.h"
#include "fs_frame.h"
#include "fs_learner.h"

#define MAX_STREAM (3u * FS_WIRE_MAX)
#define CHUNK_FLOATS ((FS_MAX_PAYLOAD - 16u) / 4u)

/* ---- the port: replies are captured for checking ---- */

static struct {
    uint8_t bytes[2][FS_WIRE_MAX];
    size_t len[2];
    int count;
} s_cap;
static uint32_t s_clock, s_sensor_left;
static const char *const s_sensors[] = {"synthetic"};
static const fs_board s_board = {"fuzz", "host", 0, 0, 0, FS_CAP_TIME | FS_CAP_SENSOR, 1,
                                 s_sensors};

static void fail(const char *what, unsigned long frame) {
    fprintf(stderr, "fs_fuzz: frame %lu: %s\n", frame, what);
    exit(1);
}

const fs_board *fs_port_board(void) { return &s_board; }
uint32_t fs_port_time_us(void) { return s_clock += 7u; }
uint32_t fs_port_energy_uj(void) { return FS_NOT_MEASURED; }

void fs_port_write(const uint8_t *data, size_t len) {
    if (len > FS_WIRE_MAX) {
        fail("a reply longer than the largest frame", 0);
    }
    if (s_cap.count < 2) {
        memcpy(s_cap.bytes[s_cap.count], data, len);
        s_cap.len[s_cap.count] = len;
    }
    s_cap.count++;
}

int fs_port_sensor_sample(float *x, uint16_t features, uint8_t loss, uint32_t *label, float *y,
                          uint16_t outputs) {
    uint16_t i;
    if (s_sensor_left == 0) {
        return 0;
    }
    s_sensor_left--;
    for (i = 0; i < features; i++) {
        x[i] = (float)((s_clock + i) % 7u) - 3.0f;
    }
    for (i = 0; i < outputs && loss == FS_LOSS_MSE; i++) {
        y[i] = 0.5f;
    }
    *label = s_sensor_left % (outputs + 1u); /* now and then out of range: skipped */
    return 1;
}

/* ---- deterministic randomness (splitmix64) ---- */

static uint64_t s_rng;

static uint32_t rnd(void) {
    uint64_t z = (s_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}

static uint32_t below(uint32_t n) { return n == 0 ? 0 : rnd() % n; }

static float rnd_float(void) { return (float)((int32_t)below(2001u) - 1000) / 500.0f; }

/* ---- building frames ---- */

typedef struct {
    uint16_t outputs, features;
    uint8_t loss;
    float lr;
} config;

static config s_cfg;
static uint16_t s_seq;
static unsigned long s_frame;
#define OVER 512u /* room for payloads past the limit */
static uint8_t s_payload[FS_MAX_PAYLOAD + OVER];
static uint8_t s_raw[FS_RAW_MAX + OVER];
static uint8_t s_stream[MAX_STREAM];
static uint8_t s_req[FS_RAW_MAX];   /* the request as the harness decodes it */
static uint8_t s_check[FS_RAW_MAX]; /* the reply, decoded */

/* header, payload, CRC into s_raw (version, length as given); returns the size */
static size_t build_raw(uint8_t version, uint8_t type, uint16_t seq, uint16_t length_field,
                        size_t payload_len, uint8_t flags) {
    size_t n = FS_HEADER_SIZE + payload_len;
    s_raw[0] = version;
    s_raw[1] = type;
    fs_put_u16(s_raw + 2, seq);
    fs_put_u16(s_raw + 4, length_field);
    s_raw[6] = 0;
    s_raw[7] = flags;
    memcpy(s_raw + FS_HEADER_SIZE, s_payload, payload_len);
    fs_put_u16(s_raw + n, fs_crc16(s_raw, n, 0xFFFFu));
    return n + FS_CRC_SIZE;
}

static size_t sample_bytes(const config *c) {
    return 4u * c->features + (c->loss == FS_LOSS_SOFTMAX ? 4u : 4u * c->outputs);
}

/* TRAIN / EVAL payload with as many samples as fit (at most 8), labels mostly valid. */
static size_t gen_samples(void) {
    size_t per = sample_bytes(&s_cfg), room = (FS_MAX_PAYLOAD - 2u) / per, k, j, n = 2;
    uint16_t count = (uint16_t)below((uint32_t)(room < 8u ? room : 8u) + 1u);
    fs_put_u16(s_payload, count);
    for (k = 0; k < count; k++) {
        for (j = 0; j < s_cfg.features; j++, n += 4) {
            fs_put_f32(s_payload + n, rnd_float());
        }
        if (s_cfg.loss == FS_LOSS_SOFTMAX) {
            fs_put_u32(s_payload + n, below(20u) == 0 ? rnd() : below(s_cfg.outputs));
            n += 4;
        }
        for (j = 0; j < s_cfg.outputs && s_cfg.loss == FS_LOSS_MSE; j++, n += 4) {
            fs_put_f32(s_payload + n, rnd_float());
        }
    }
    return n;
}

static size_t gen_load_chunk(const config *c, uint32_t offset, uint32_t count) {
    uint32_t i;
    fs_put_u16(s_payload, c->outputs);
    fs_put_u16(s_payload + 2, c->features);
    s_payload[4] = c->loss;
    s_payload[5] = 0;
    fs_put_u16(s_payload + 6, 0);
    fs_put_f32(s_payload + 8, c->lr);
    fs_put_u32(s_payload + 12, offset);
    for (i = 0; i < count; i++) {
        fs_put_f32(s_payload + 16u + 4u * i, rnd_float() * 0.1f);
    }
    return 16u + 4u * count;
}

/* ---- feeding and checking ---- */

static struct {
    int valid;
    uint8_t type;
    uint16_t seq;
    uint8_t bytes[FS_WIRE_MAX];
    size_t len;
} s_last;
static int s_need_load;
static unsigned long s_stats[8], s_replays, s_dropped;

/* The reply in s_cap to request *req (frame status st), against the rules in the header. */
static void check_reply(const fs_header *req, fs_frame_status st, uint32_t steps_before) {
    const uint8_t *wire = s_cap.bytes[0];
    const size_t len = s_cap.len[0];
    fs_header h;
    fs_result r;
    if (len < 2 || wire[len - 1] != 0) fail("a reply without its delimiter", s_frame);
    r = fs_cobs_decode(wire, len - 1, s_check, sizeof s_check);
    if (r.status != FS_FRAME_OK || fs_frame_check(s_check, r.len, &h) != FS_FRAME_OK) {
        fail("a reply that does not decode", s_frame);
    }
    if (h.sequence != req->sequence) fail("a reply with another sequence", s_frame);
    if (h.status > FS_NOT_FINITE || (h.status == FS_OK) != (h.type != FS_ERROR)) {
        fail("a reply whose status and type disagree", s_frame);
    }
    if (h.type != FS_ERROR && h.type != req->type) fail("a reply of another type", s_frame);
    if (h.type == FS_ERROR && h.length > FS_REASON_MAX) fail("a reason over 96 bytes", s_frame);
    s_stats[h.status]++;
    if (st == FS_FRAME_VERSION) {
        if (h.status != FS_BAD_REQUEST) fail("another version not refused", s_frame);
        if (fs_device_steps() != steps_before) fail("trained on another version", s_frame);
        return;
    }
    if (req->type != FS_HELLO && s_last.valid && s_last.seq == req->sequence &&
        s_last.type == req->type) {
        s_replays++;
        if (len != s_last.len || memcmp(wire, s_last.bytes, len) != 0) {
            fail("a replay that differs from the reply it repeats", s_frame);
        }
        if (fs_device_steps() != steps_before) fail("a replay trained again", s_frame);
        return;
    }
    if (req->type == FS_TRAIN && h.status == FS_OK) {
        if (h.length != 16 || fs_device_steps() - steps_before != fs_get_u16(s_check + 8)) {
            fail("TRAIN reply and steps trained disagree", s_frame);
        }
    } else if (fs_device_steps() != steps_before) {
        fail("trained without an OK TRAIN reply", s_frame);
    }
    if (req->type == FS_EVAL && h.status == FS_OK && h.length != 8) fail("EVAL reply", s_frame);
    if (req->type == FS_GET_WEIGHTS && h.status == FS_OK &&
        (h.length < 8 || (h.length - 4) % 4 != 0 ||
         fs_get_u32(s_check + 8) != fs_get_u32(s_req + 8))) {
        fail("GET_WEIGHTS reply", s_frame);
    }
    if (h.status == FS_NO_MODEL || (req->type == FS_TRAIN && h.status == FS_NOT_FINITE)) {
        s_need_load = 1; /* a diverged TRAIN forgets the head */
    }
    s_last.valid = req->type != FS_HELLO;
    s_last.type = req->type;
    s_last.seq = req->sequence;
    memcpy(s_last.bytes, wire, len);
    s_last.len = len;
}

/* One frame's bytes (no 0x00 among them) and the delimiter. */
static void feed_segment(const uint8_t *seg, size_t n) {
    fs_header h;
    fs_result r = fs_cobs_decode(seg, n, s_req, sizeof s_req);
    fs_frame_status st = r.status == FS_FRAME_OK ? fs_frame_check(s_req, r.len, &h) : r.status;
    int expect = st == FS_FRAME_OK || st == FS_FRAME_VERSION;
    uint32_t steps_before = fs_device_steps();
    size_t i;
    s_cap.count = 0;
    s_sensor_left = below(4u);
    for (i = 0; i < n; i++) {
        fs_device_feed(seg[i]);
    }
    fs_device_feed(0);
    if (s_cap.count != expect) {
        fail(expect ? "no reply to a frame that checks" : "a reply to a broken frame", s_frame);
    }
    if (expect) {
        check_reply(&h, st, steps_before);
    } else {
        s_dropped++;
    }
}

/* A byte stream, split at every 0x00 as the device splits it; ends with a delimiter. */
static void feed_stream(const uint8_t *data, size_t n) {
    size_t start = 0, i;
    for (i = 0; i < n; i++) {
        if (data[i] == 0) {
            feed_segment(data + start, i - start);
            start = i + 1;
        }
    }
    if (start < n) {
        feed_segment(data + start, n - start);
    }
}

/* s_raw[0, n) COBS-encoded into s_stream with its delimiter; returns the stream length. */
static size_t encode_stream(size_t n) {
    fs_result r = fs_cobs_encode(s_raw, n, s_stream, sizeof s_stream - 1u);
    if (r.status != FS_FRAME_OK) fail("the harness could not encode a frame", s_frame);
    s_stream[r.len] = 0;
    return r.len + 1u;
}

/* A head of random shape, loaded in chunks of random size; every reply must be OK. */
static void load_head(void) {
    config c;
    uint32_t size, off = 0, count;
    size_t len;
    c.features = (uint16_t)(1u + below(below(8u) == 0 ? FS_MAX_FEATURES : 32u));
    c.outputs = (uint16_t)(1u + below(below(8u) == 0 ? FS_MAX_OUTPUTS : 10u));
    while (fs_head_size(c.outputs, c.features) > FS_MAX_FLOATS) {
        c.features = (uint16_t)(c.features / 2u);
    }
    c.loss = (uint8_t)below(2u);
    c.lr = 0.01f * (float)(1u + below(10u));
    size = fs_head_size(c.outputs, c.features);
    while (off < size) {
        count = 1u + below(CHUNK_FLOATS);
        count = count < size - off ? count : size - off;
        len = gen_load_chunk(&c, off, count);
        off += count;
        feed_stream(s_stream, encode_stream(build_raw(FS_VERSION, FS_LOAD_WEIGHTS, ++s_seq,
                                                      (uint16_t)len, len,
                                                      off < size ? FS_FLAG_MORE : 0)));
        if (s_cap.count != 1 || s_check[6] != FS_OK) fail("a valid head did not load", s_frame);
    }
    s_cfg = c;
    s_need_load = 0;
}

/* ---- one generated frame, then a mutation ---- */

typedef struct {
    uint8_t version, type, flags;
    uint16_t seq, length_field;
    size_t payload_len;
} spec;

static spec gen_frame(void) {
    spec f = {FS_VERSION, FS_TRAIN, 0, 0, 0, 0};
    const uint32_t pick = below(16u);
    config c = s_cfg;
    if (pick == 0) {
        f.type = FS_HELLO;
    } else if (pick <= 2) {
        c.loss = (uint8_t)(below(16u) == 0 ? below(256u) : c.loss);
        c.features = (uint16_t)(below(8u) == 0 ? below(0x10000u) : c.features);
        f.type = FS_LOAD_WEIGHTS;
        f.payload_len = gen_load_chunk(&c, below(2u) ? 0 : below(600u), below(CHUNK_FLOATS + 1u));
        f.flags = (uint8_t)(below(2u) ? FS_FLAG_MORE : 0);
    } else if (pick <= 7 || pick == 10 || pick == 11) {
        f.type = pick >= 10 ? FS_EVAL : FS_TRAIN;
        f.payload_len = gen_samples();
    } else if (pick <= 9) {
        f.type = FS_GET_WEIGHTS;
        fs_put_u32(s_payload, below(fs_head_size(c.outputs, c.features) + 3u));
        f.payload_len = 4;
    } else if (pick == 12) {
        f.type = (uint8_t)(below(4u) == 0 ? FS_RESET : FS_TRAIN);
        f.payload_len = f.type == FS_TRAIN ? gen_samples() : 0;
    } else if (pick == 13) {
        f.type = FS_ERROR;
    } else if (pick == 14) {
        f.type = (uint8_t)(below(2u) ? 0 : 8u + below(248u)); /* not a message type */
    } else {
        fs_put_u16(s_payload, 0); /* TRAIN with count 0: the sensor */
        f.payload_len = 2;
    }
    f.seq = below(8u) == 0 ? s_seq : (below(64u) == 0 ? (uint16_t)rnd() : ++s_seq);
    f.length_field = (uint16_t)f.payload_len;
    return f;
}

/* Mutations behind a recomputed CRC: these reach the handlers (or the version check). */
static void mutate_raw(spec *f, uint32_t how) {
    uint32_t i, n;
    if (how == 1) { /* payload bytes changed */
        for (i = 0, n = 1u + below(4u); i < n && f->payload_len > 0; i++) {
            s_payload[below((uint32_t)f->payload_len)] = (uint8_t)rnd();
        }
    } else if (how == 2) { /* payload cut or padded, length kept consistent */
        f->payload_len = below(2u) ? below((uint32_t)f->payload_len + 1u)
                                   : f->payload_len + below(64u);
        if (f->payload_len > FS_MAX_PAYLOAD) f->payload_len = FS_MAX_PAYLOAD;
        f->length_field = (uint16_t)f->payload_len;
    } else if (how == 3) { /* a length field that lies, often past the limit */
        f->length_field = (uint16_t)(below(2u) ? rnd() : f->payload_len + 1u + below(4u));
    } else if (how == 4) {
        f->version = (uint8_t)(2u + below(254u)); /* 0 is tried too, through the wrap */
    } else if (how == 5) { /* a payload past the limit: the frame outgrows the buffer */
        f->payload_len = FS_MAX_PAYLOAD + 1u + below(OVER - 1u);
        f->length_field = (uint16_t)f->payload_len;
    }
}

/* Mutations of the wire bytes s_stream[0, n); returns the new length (delimiter appended). */
static size_t mutate_wire(size_t n, uint32_t how) {
    uint32_t i, k = 1u + below(3u), at;
    n--; /* work on the frame without its delimiter */
    for (i = 0; i < k && n > 0; i++) {
        at = below((uint32_t)n);
        if (how == 6) {
            s_stream[at] ^= (uint8_t)(1u << below(8u)); /* bit flip */
        } else if (how == 7) {
            n = at; /* truncated */
        } else if (how == 8) {
            memmove(s_stream + at, s_stream + at + 1, n - at - 1u); /* byte dropped */
            n--;
        } else if (how == 9 && n + 2u < sizeof s_stream) {
            memmove(s_stream + at + 1, s_stream + at, n - at); /* byte inserted */
            s_stream[at] = (uint8_t)rnd();
            n++;
        }
    }
    if (how == 10) { /* garbage, zeros included */
        for (n = below(sizeof s_stream - 1u), i = 0; i < n; i++) {
            s_stream[i] = (uint8_t)(below(8u) == 0 ? 0 : rnd());
        }
    } else if (how == 11) { /* a run without a delimiter, longer than any frame */
        for (n = FS_WIRE_MAX + below(FS_WIRE_MAX), i = 0; i < n; i++) {
            s_stream[i] = (uint8_t)(1u + below(255u));
        }
    }
    s_stream[n] = 0;
    return n + 1u;
}

static void one_frame(void) {
    spec f = gen_frame();
    const uint32_t how = below(16u); /* 0 and 12..15: sent as generated */
    size_t n;
    if (how <= 5) {
        mutate_raw(&f, how);
    }
    n = encode_stream(build_raw(f.version, f.type, f.seq, f.length_field, f.payload_len, f.flags));
    if (how >= 6 && how <= 11) {
        n = mutate_wire(n, how);
    }
    feed_stream(s_stream, n);
}

static int fuzz_stdin(void) {
    size_t cap = 1u << 16, n = 0, got, i;
    unsigned long replies = 0;
    uint8_t *data = malloc(cap), *bigger;
    while (data != NULL && (got = fread(data + n, 1, cap - n, stdin)) > 0) {
        n += got;
        if (n == cap && (bigger = realloc(data, cap * 2u)) != NULL) {
            data = bigger;
            cap *= 2u;
        } else if (n == cap) {
            break;
        }
    }
    if (data == NULL) {
        fputs("fs_fuzz: out of memory\n", stderr);
        return 1;
    }
    memset(s_stats, 0, sizeof s_stats); /* count the input's replies, not the head's load */
    s_dropped = 0;
    feed_stream(data, n);
    free(data);
    for (i = 0; i < 8; i++) {
        replies += s_stats[i];
    }
    printf("fs_fuzz: %zu bytes from stdin, %lu replies, %lu dropped frames\n", n, replies,
           s_dropped);
    return 0;
}

int main(int argc, char **argv) {
    unsigned long frames = 100000ul, seed = 1ul, i;
    int from_stdin = 0, a;
    for (a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--stdin") == 0) {
            from_stdin = 1;
        } else if (a + 1 < argc && strcmp(argv[a], "--seed") == 0) {
            seed = strtoul(argv[++a], NULL, 10);
        } else if (a + 1 < argc && strcmp(argv[a], "--frames") == 0) {
            frames = strtoul(argv[++a], NULL, 10);
        } else {
            fprintf(stderr, "usage: fs_fuzz [--seed S] [--frames N] | --stdin\n");
            return 2;
        }
    }
    s_rng = seed;
    fs_device_init();
    load_head();
    if (from_stdin) {
        return fuzz_stdin();
    }
    for (i = 0; i < frames; i++) {
        s_frame = i;
        if (s_need_load || below(64u) == 0) {
            load_head();
        }
        one_frame();
    }
    printf("fs_fuzz: seed %lu, %lu frames: replies ok %lu bad_request %lu too_large %lu "
           "no_model %lu not_finite %lu; %lu replays, %lu dropped, %lu steps\n",
           seed, frames, s_stats[FS_OK], s_stats[FS_BAD_REQUEST], s_stats[FS_TOO_LARGE],
           s_stats[FS_NO_MODEL], s_stats[FS_NOT_FINITE], s_replays, s_dropped,
           (unsigned long)fs_device_steps());
    return 0;
}
