/* fedsim firmware: framing (see fs_frame.h). */
#include "fs_frame.h"

const char *fs_frame_status_name(fs_frame_status status) {
    switch (status) {
    case FS_FRAME_OK: return "ok";
    case FS_FRAME_EMPTY: return "empty";
    case FS_FRAME_OVERSIZE: return "oversize";
    case FS_FRAME_COBS: return "cobs";
    case FS_FRAME_SHORT: return "short";
    case FS_FRAME_CRC: return "crc";
    case FS_FRAME_VERSION: return "version";
    case FS_FRAME_LENGTH: return "length";
    }
    return "unknown";
}

/* CRC of each 4-bit value shifted in at the top: two lookups per byte instead of eight shifts,
 * for 32 bytes of flash. */
static const uint16_t s_crc_nibble[16] = {
    0x0000u, 0x1021u, 0x2042u, 0x3063u, 0x4084u, 0x50A5u, 0x60C6u, 0x70E7u,
    0x8108u, 0x9129u, 0xA14Au, 0xB16Bu, 0xC18Cu, 0xD1ADu, 0xE1CEu, 0xF1EFu,
};

uint16_t fs_crc16(const uint8_t *data, size_t n, uint16_t crc) {
    size_t i;
    for (i = 0; i < n; i++) {
        crc ^= (uint16_t)(data[i] << 8);
        crc = (uint16_t)((crc << 4) ^ s_crc_nibble[crc >> 12]);
        crc = (uint16_t)((crc << 4) ^ s_crc_nibble[crc >> 12]);
    }
    return crc;
}

static void cobs_emit(fs_cobs_decoder *d, uint8_t byte) {
    if (d->len < d->cap) {
        d->out[d->len++] = byte;
    } else {
        d->overflow = 1;
    }
}

void fs_cobs_begin(fs_cobs_decoder *d, uint8_t *out, size_t cap) {
    d->out = out;
    d->cap = cap;
    d->len = 0;
    d->code = 0;
    d->left = 0;
    d->started = 0;
    d->overflow = 0;
}

void fs_cobs_push(fs_cobs_decoder *d, uint8_t byte) {
    if (d->overflow) {
        return; /* dropping until the delimiter */
    }
    if (d->left > 0) {
        cobs_emit(d, byte);
        d->left--;
        return;
    }
    /* A code byte. The block before it stood for "data, then a zero" unless it was a full one
     * (code 0xFF); the zero is only written once we know more follows, as in cobs_decode(). */
    if (d->started && d->code < 0xFFu) {
        cobs_emit(d, 0);
    }
    d->started = 1;
    d->code = byte;
    d->left = (uint8_t)(byte - 1u); /* byte is never 0: the caller splits frames on 0x00 */
}

fs_result fs_cobs_end(const fs_cobs_decoder *d) {
    fs_result r;
    r.len = d->overflow ? 0 : d->len;
    if (d->overflow) {
        r.status = FS_FRAME_OVERSIZE;
    } else if (!d->started) {
        r.status = FS_FRAME_EMPTY;
    } else if (d->left > 0) {
        r.status = FS_FRAME_COBS; /* the last block runs past the end */
    } else {
        r.status = FS_FRAME_OK;
    }
    return r;
}

fs_result fs_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    fs_cobs_decoder d;
    fs_result r;
    size_t i;
    fs_cobs_begin(&d, out, cap);
    for (i = 0; i < n; i++) {
        if (in[i] == 0) {
            r.len = 0;
            r.status = FS_FRAME_COBS;
            return r;
        }
        fs_cobs_push(&d, in[i]);
    }
    return fs_cobs_end(&d);
}

/* Incremental canonical COBS encoding. A block that reaches 254 data bytes is closed only when
 * another byte follows, so a full block at the very end gets no extra code byte (as in
 * edge/protocol.py). */
typedef struct {
    uint8_t *out;
    size_t cap;
    size_t len;
    size_t code_at; /* where the current block's code byte goes */
    uint8_t code;
    uint8_t full;
    uint8_t overflow;
} cobs_encoder;

static void enc_put(cobs_encoder *e, uint8_t byte) {
    if (e->len < e->cap) {
        e->out[e->len++] = byte;
    } else {
        e->overflow = 1;
    }
}

static void enc_close_block(cobs_encoder *e) {
    if (e->code_at < e->len) {
        e->out[e->code_at] = e->code;
    }
    e->code_at = e->len;
    e->code = 1;
    enc_put(e, 0); /* placeholder for the next code byte */
}

static void enc_begin(cobs_encoder *e, uint8_t *out, size_t cap) {
    e->out = out;
    e->cap = cap;
    e->len = 0;
    e->code_at = 0;
    e->code = 1;
    e->full = 0;
    e->overflow = 0;
    enc_put(e, 0);
}

static void enc_push(cobs_encoder *e, uint8_t byte) {
    if (e->full) {
        e->full = 0;
        enc_close_block(e);
    }
    if (byte == 0) {
        enc_close_block(e);
        return;
    }
    enc_put(e, byte);
    if (++e->code == 0xFFu) {
        e->full = 1;
    }
}

static void enc_push_all(cobs_encoder *e, const uint8_t *data, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        enc_push(e, data[i]);
    }
}

static fs_result enc_end(cobs_encoder *e) {
    fs_result r;
    if (e->code_at < e->len) {
        e->out[e->code_at] = e->code;
    }
    r.len = e->overflow ? 0 : e->len;
    r.status = e->overflow ? FS_FRAME_OVERSIZE : FS_FRAME_OK;
    return r;
}

fs_result fs_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    cobs_encoder e;
    enc_begin(&e, out, cap);
    enc_push_all(&e, in, n);
    return enc_end(&e);
}

fs_frame_status fs_frame_check(const uint8_t *raw, size_t n, fs_header *h) {
    size_t body;
    if (n < FS_HEADER_SIZE + FS_CRC_SIZE) {
        return FS_FRAME_SHORT;
    }
    body = n - FS_CRC_SIZE;
    if (fs_crc16(raw, body, 0xFFFFu) != fs_get_u16(raw + body)) {
        return FS_FRAME_CRC;
    }
    h->version = raw[0];
    h->type = raw[1];
    h->sequence = fs_get_u16(raw + 2);
    h->length = fs_get_u16(raw + 4);
    h->status = raw[6];
    h->flags = raw[7];
    if (h->version != FS_VERSION) {
        return FS_FRAME_VERSION;
    }
    if ((size_t)h->length != body - FS_HEADER_SIZE) {
        return FS_FRAME_LENGTH;
    }
    return FS_FRAME_OK;
}

fs_result fs_frame_encode(const fs_header *h, const uint8_t *payload, uint8_t *out, size_t cap) {
    uint8_t head[FS_HEADER_SIZE];
    uint8_t crc_bytes[FS_CRC_SIZE];
    uint16_t crc;
    cobs_encoder e;
    fs_result r;
    head[0] = h->version;
    head[1] = h->type;
    fs_put_u16(head + 2, h->sequence);
    fs_put_u16(head + 4, h->length);
    head[6] = h->status;
    head[7] = h->flags;
    crc = fs_crc16(head, sizeof head, 0xFFFFu);
    crc = fs_crc16(payload, h->length, crc);
    fs_put_u16(crc_bytes, crc);
    enc_begin(&e, out, cap);
    enc_push_all(&e, head, sizeof head);
    enc_push_all(&e, payload, h->length);
    enc_push_all(&e, crc_bytes, sizeof crc_bytes);
    r = enc_end(&e);
    if (r.status == FS_FRAME_OK && r.len < cap) {
        out[r.len++] = 0; /* the delimiter */
    } else {
        r.len = 0;
        r.status = FS_FRAME_OVERSIZE;
    }
    return r;
}
