/* fedsim firmware: building reasons for ERROR replies without printf (at most 96 bytes). */
#include "fs_messages.h"

void fs_reply_text(fs_reply *r, const char *text) {
    while (*text != '\0' && r->length < FS_REASON_MAX) {
        r->payload[r->length++] = (uint8_t)*text++;
    }
}

void fs_reply_uint(fs_reply *r, uint32_t value) {
    char digits[10];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0);
    while (n > 0 && r->length < FS_REASON_MAX) {
        r->payload[r->length++] = (uint8_t)digits[--n];
    }
}

void fs_reply_error(fs_reply *r, fs_status status, const char *text) {
    r->status = (uint8_t)status;
    r->flags = 0;
    r->length = 0;
    fs_reply_text(r, text);
}

void fs_reply_fail(fs_reply *r, fs_status status, const char *what, uint32_t value,
                   const char *rest) {
    fs_reply_error(r, status, what);
    fs_reply_uint(r, value);
    fs_reply_text(r, rest);
}
