/* fedsim firmware: framing. CRC-16/CCITT-FALSE, canonical COBS (byte-identical with
 * edge/protocol.py), and the checked 8-byte header.
 *
 * Encoders write into caller buffers and return {len, status}; nothing is written past `cap`.
 * The decoder is incremental (one byte at a time, as bytes arrive on a UART), so a frame never
 * needs its encoded and decoded forms in memory at once.
 */
#ifndef FS_FRAME_H
#define FS_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "fs_wire.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Why a frame was not accepted; names match the Python exception classes where one exists. */
typedef enum {
    FS_FRAME_OK = 0,
    FS_FRAME_EMPTY,     /* nothing between two delimiters: skipped, not an error */
    FS_FRAME_OVERSIZE,  /* more bytes than the buffer holds: dropped up to the next 0x00 */
    FS_FRAME_COBS,      /* a COBS block runs past the end, or a 0x00 inside */
    FS_FRAME_SHORT,     /* shorter than a header and a CRC */
    FS_FRAME_CRC,       /* CRC mismatch (Python: CrcError) */
    FS_FRAME_VERSION,   /* another protocol version (Python: VersionError) */
    FS_FRAME_LENGTH     /* header length differs from the payload carried */
} fs_frame_status;

typedef struct {
    size_t len;
    fs_frame_status status;
} fs_result;

/* A short lower-case name of a status ("ok", "crc", ...), for tools and logs. */
const char *fs_frame_status_name(fs_frame_status status);

/* CRC-16/CCITT-FALSE: poly 0x1021, no reflection, no final xor; start with crc = 0xFFFF. */
uint16_t fs_crc16(const uint8_t *data, size_t n, uint16_t crc);

/* Incremental COBS decoding into out[cap]: fs_cobs_push() every byte but the 0x00 delimiter,
 * then fs_cobs_end() says whether a whole frame came in. */
typedef struct {
    uint8_t *out;
    size_t cap;
    size_t len;
    uint8_t code;     /* code byte of the current block */
    uint8_t left;     /* data bytes still due in the current block */
    uint8_t started;  /* a code byte has been seen */
    uint8_t overflow; /* more output than cap: the frame is dropped */
} fs_cobs_decoder;

void fs_cobs_begin(fs_cobs_decoder *d, uint8_t *out, size_t cap);
void fs_cobs_push(fs_cobs_decoder *d, uint8_t byte);
fs_result fs_cobs_end(const fs_cobs_decoder *d);

/* Whole-buffer forms. Decoding takes the bytes between delimiters (a 0x00 in them is an error). */
fs_result fs_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);
fs_result fs_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);

/* Checks a decoded frame (header, payload, CRC) in the order edge/protocol.py does: size,
 * CRC, version, length. On FS_FRAME_OK and FS_FRAME_VERSION *h is filled in. */
fs_frame_status fs_frame_check(const uint8_t *raw, size_t n, fs_header *h);

/* The wire bytes of a frame: COBS(header, payload, CRC) and the 0x00 delimiter. The header's
 * version and length fields are taken from h as given. */
fs_result fs_frame_encode(const fs_header *h, const uint8_t *payload, uint8_t *out, size_t cap);

#ifdef __cplusplus
}
#endif

#endif /* FS_FRAME_H */
