/* fedsim firmware: receiving frames, replying, and replaying the last reply (see fs_device.h).
 *
 * Replay: the encoded bytes of the last reply stay in s_tx. A request with the sequence and
 * type of the request that produced them gets them again, byte for byte, and is not run again:
 * a retried TRAIN never trains twice. HELLO always runs and clears this memory.
 */
#include "fs_device.h"

#include "fedsim_port.h"
#include "fs_frame.h"
#include "fs_messages.h"

/* An ERROR reply to a frame of another protocol version: header, reason, CRC. */
#define FS_SHORT_WIRE_MAX (FS_COBS_MAX(FS_HEADER_SIZE + FS_REASON_MAX + FS_CRC_SIZE) + 1u)

static uint8_t s_rx[FS_RAW_MAX];           /* the frame being received, decoded */
static fs_cobs_decoder s_dec;
static uint8_t s_payload[FS_MAX_PAYLOAD];  /* the reply payload being built */
static uint8_t s_tx[FS_WIRE_MAX];          /* the last reply on the wire */
static size_t s_tx_len;
static uint8_t s_short_tx[FS_SHORT_WIRE_MAX]; /* replies that must not disturb s_tx */

static struct {
    uint8_t valid;
    uint8_t type;
    uint16_t sequence;
} s_replay;

void fs_device_init(void) {
    fs_cobs_begin(&s_dec, s_rx, sizeof s_rx);
    s_replay.valid = 0;
    s_tx_len = 0;
    fs_messages_reset();
}

uint32_t fs_device_steps(void) {
    return fs_messages_steps();
}

/* Encode a reply to request `req` into out[cap]; returns its length (0 if it did not fit, which
 * the buffer sizes rule out). */
static size_t encode_reply(const fs_header *req, const fs_reply *r, uint8_t *out, size_t cap) {
    fs_header h;
    fs_result res;
    h.version = FS_VERSION;
    h.type = r->status == FS_OK ? req->type : (uint8_t)FS_ERROR;
    h.sequence = req->sequence;
    h.length = r->length;
    h.status = r->status;
    h.flags = r->status == FS_OK ? r->flags : 0;
    res = fs_frame_encode(&h, r->payload, out, cap);
    return res.status == FS_FRAME_OK ? res.len : 0;
}

static void new_reply(fs_reply *r) {
    r->payload = s_payload;
    r->length = 0;
    r->status = FS_OK;
    r->flags = 0;
}

static void answer_other_version(const fs_header *h) {
    fs_reply r;
    size_t len;
    new_reply(&r);
    fs_reply_error(&r, FS_BAD_REQUEST, "protocol version ");
    fs_reply_uint(&r, h->version);
    fs_reply_text(&r, ", this device speaks ");
    fs_reply_uint(&r, FS_VERSION);
    len = encode_reply(h, &r, s_short_tx, sizeof s_short_tx);
    if (len > 0) {
        fs_port_write(s_short_tx, len);
    }
}

static void answer(const fs_header *h, const uint8_t *payload) {
    fs_reply r;
    new_reply(&r);
    fs_messages_handle(h, payload, &r);
    s_tx_len = encode_reply(h, &r, s_tx, sizeof s_tx);
    if (s_tx_len == 0) { /* unreachable: s_tx holds the largest frame */
        new_reply(&r);
        fs_reply_error(&r, FS_INTERNAL, "reply does not fit the transmit buffer");
        s_tx_len = encode_reply(h, &r, s_tx, sizeof s_tx);
    }
    s_replay.valid = h->type != FS_HELLO;
    s_replay.type = h->type;
    s_replay.sequence = h->sequence;
    fs_port_write(s_tx, s_tx_len);
}

static void on_frame(void) {
    fs_header h;
    fs_result got = fs_cobs_end(&s_dec);
    fs_frame_status status;
    if (got.status != FS_FRAME_OK) {
        return; /* empty, oversize or broken COBS: dropped, the host retries */
    }
    status = fs_frame_check(s_rx, got.len, &h);
    if (status == FS_FRAME_VERSION) {
        answer_other_version(&h);
        return;
    }
    if (status != FS_FRAME_OK) {
        return; /* short, CRC or length: dropped */
    }
    if (h.type == FS_HELLO) {
        s_replay.valid = 0;
    } else if (s_replay.valid && h.sequence == s_replay.sequence && h.type == s_replay.type) {
        fs_port_write(s_tx, s_tx_len);
        return;
    }
    answer(&h, s_rx + FS_HEADER_SIZE);
}

void fs_device_feed(uint8_t byte) {
    if (byte != 0) {
        fs_cobs_push(&s_dec, byte);
        return;
    }
    on_frame();
    fs_cobs_begin(&s_dec, s_rx, sizeof s_rx);
}
