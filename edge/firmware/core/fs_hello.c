/* fedsim firmware: the HELLO reply, the device's self-description (PROTOCOL.md, "HELLO"). */
#include <string.h>

#include "fedsim_port.h"
#include "fs_messages.h"

/* A str field (u8 length, bytes), truncated to what fits while leaving `reserve` bytes free
 * after it (so later fields always have room): every field stays where the host expects it. */
static void put_str(fs_reply *r, const char *s, size_t reserve) {
    size_t n = s != NULL ? strlen(s) : 0;
    size_t room = FS_MAX_PAYLOAD - r->length; /* r->length + 1 + reserve <= FS_MAX_PAYLOAD */
    room = room > 1u + reserve ? room - 1u - reserve : 0u;
    if (n > 255u) {
        n = 255u;
    }
    if (n > room) {
        n = room;
    }
    r->payload[r->length++] = (uint8_t)n;
    if (n > 0) {
        memcpy(r->payload + r->length, s, n);
    }
    r->length = (uint16_t)(r->length + n);
}

void fs_hello_handle(const fs_header *h, fs_reply *r) {
    const fs_board *b = fs_port_board();
    uint8_t *p = r->payload;
    size_t count_at;
    uint8_t i;
    if (h->length != 0) {
        fs_reply_fail(r, FS_BAD_REQUEST, "HELLO takes no payload, got ", h->length, " bytes");
        return;
    }
    p[0] = FS_VERSION;
    p[1] = 0x03u; /* learners: softmax head, linear (mse) head */
    p[2] = 1u;    /* model slots */
    p[3] = b->caps;
    fs_put_u16(p + 4, FS_MAX_PAYLOAD);
    fs_put_u16(p + 6, FS_MAX_FEATURES);
    fs_put_u16(p + 8, FS_MAX_OUTPUTS);
    fs_put_u16(p + 10, 0);
    fs_put_u32(p + 12, FS_MAX_FLOATS);
    fs_put_u32(p + 16, b->clock_hz);
    fs_put_u32(p + 20, b->sram_bytes);
    fs_put_u32(p + 24, b->flash_bytes);
    r->length = 28;
    /* room is kept for the strings still to come (1 byte each) and the sensor count */
    put_str(r, b->board, 3u);
    put_str(r, b->core, 2u);
    put_str(r, FS_FIRMWARE_NAME, 1u);
    count_at = r->length;
    r->payload[r->length++] = 0; /* fits: reserved above */
    for (i = 0; i < b->sensor_count && b->sensors != NULL; i++) {
        if (r->length + 1u > FS_MAX_PAYLOAD) {
            break; /* the count says how many made it */
        }
        put_str(r, b->sensors[i], 0u);
        r->payload[count_at]++;
    }
}
