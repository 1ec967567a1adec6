/* fs_vectors: the C codec on hex frames, one per line, so Python can hold it against
 * edge/protocol.py and edge/protocol_vectors.json.
 *
 *   fs_vectors decode   in:  wire bytes in hex (a trailing 00 delimiter is removed)
 *                       out: "ok TYPE SEQ STATUS FLAGS PAYLOADHEX" (payload "-" when empty)
 *                            or "error CLASS": cobs, short, crc, version, length, type (unknown
 *                            message type or status), empty, oversize, hex (not hex input)
 *   fs_vectors encode   in:  "TYPE SEQ STATUS FLAGS PAYLOADHEX" (decimal; payload "-" if empty)
 *                       out: the wire bytes in hex, delimiter included
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs_frame.h"

#define LINE_MAX_CHARS (4u * FS_WIRE_MAX + 64u)

static char s_line[LINE_MAX_CHARS];
static uint8_t s_bytes[2u * FS_WIRE_MAX];
static uint8_t s_raw[FS_RAW_MAX];
static uint8_t s_wire[FS_WIRE_MAX];

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Hex text (no spaces) into out[cap]; returns the byte count, or -1 for bad or too much input. */
static long parse_hex(const char *text, uint8_t *out, size_t cap) {
    size_t n = 0;
    if (strcmp(text, "-") == 0) {
        return 0;
    }
    while (text[0] != '\0') {
        int hi = hex_digit(text[0]), lo = hi < 0 ? -1 : hex_digit(text[1]);
        if (lo < 0 || n >= cap) {
            return -1;
        }
        out[n++] = (uint8_t)(hi * 16 + lo);
        text += 2;
    }
    return (long)n;
}

static void print_hex(const uint8_t *data, size_t n) {
    size_t i;
    if (n == 0) {
        fputs("-", stdout);
    }
    for (i = 0; i < n; i++) {
        printf("%02x", data[i]);
    }
}

/* Reads one line into s_line (newline removed); 0 at end of input, -1 for a line too long. */
static int read_line(void) {
    size_t n;
    int too_long = 0;
    for (;;) {
        if (fgets(s_line, sizeof s_line, stdin) == NULL) {
            return too_long ? -1 : 0;
        }
        n = strlen(s_line);
        if (n > 0 && s_line[n - 1] == '\n') {
            s_line[--n] = '\0';
            if (n > 0 && s_line[n - 1] == '\r') {
                s_line[--n] = '\0';
            }
            return too_long ? -1 : 1;
        }
        if (feof(stdin)) {
            return too_long ? -1 : 1;
        }
        too_long = 1; /* keep reading to the end of this line */
    }
}

static void decode_line(void) {
    fs_header h;
    fs_result r;
    fs_frame_status st;
    long n = parse_hex(s_line, s_bytes, sizeof s_bytes);
    if (n < 0) {
        puts("error hex");
        return;
    }
    if (n > 0 && s_bytes[n - 1] == 0) {
        n--; /* the delimiter */
    }
    r = fs_cobs_decode(s_bytes, (size_t)n, s_raw, sizeof s_raw);
    st = r.status == FS_FRAME_OK ? fs_frame_check(s_raw, r.len, &h) : r.status;
    if (st == FS_FRAME_EMPTY) {
        st = FS_FRAME_SHORT; /* decode_frame(b"") is a frame too short, not a skip */
    }
    if (st != FS_FRAME_OK) {
        printf("error %s\n", fs_frame_status_name(st));
        return;
    }
    if (h.type < FS_HELLO || h.type > FS_ERROR || h.status > FS_NOT_FINITE) {
        puts("error type");
        return;
    }
    printf("ok %u %u %u %u ", h.type, h.sequence, h.status, h.flags);
    print_hex(s_raw + FS_HEADER_SIZE, h.length);
    putchar('\n');
}

static int encode_line(void) {
    unsigned type, seq, status, flags;
    char payload_hex[LINE_MAX_CHARS];
    fs_header h;
    fs_result r;
    long n;
    if (sscanf(s_line, "%u %u %u %u %s", &type, &seq, &status, &flags, payload_hex) != 5 ||
        type > 255 || seq > 0xFFFF || status > 255 || flags > 255) {
        fprintf(stderr, "fs_vectors: expected 'TYPE SEQ STATUS FLAGS PAYLOADHEX', got '%s'\n",
                s_line);
        return 0;
    }
    n = parse_hex(payload_hex, s_bytes, FS_MAX_PAYLOAD);
    if (n < 0) {
        fprintf(stderr, "fs_vectors: payload is not hex or exceeds %u bytes\n", FS_MAX_PAYLOAD);
        return 0;
    }
    h.version = FS_VERSION;
    h.type = (uint8_t)type;
    h.sequence = (uint16_t)seq;
    h.length = (uint16_t)n;
    h.status = (uint8_t)status;
    h.flags = (uint8_t)flags;
    r = fs_frame_encode(&h, s_bytes, s_wire, sizeof s_wire);
    print_hex(s_wire, r.len);
    putchar('\n');
    return r.status == FS_FRAME_OK;
}

int main(int argc, char **argv) {
    int encode, got;
    if (argc != 2 || (strcmp(argv[1], "decode") != 0 && strcmp(argv[1], "encode") != 0)) {
        fprintf(stderr, "usage: fs_vectors decode|encode  (hex frames on stdin, one a line)\n");
        return 2;
    }
    encode = strcmp(argv[1], "encode") == 0;
    while ((got = read_line()) != 0) {
        if (got < 0) {
            puts("error oversize");
            continue;
        }
        if (encode ? !encode_line() : (decode_line(), 0)) {
            return 1;
        }
    }
    return 0;
}
