/* fedsim firmware: protocol constants (PROTOCOL.md) and little-endian field access.
 *
 * Payload fields are unaligned (a TRAIN sample starts at byte 2), so every access goes through
 * bytes; that also makes the code independent of the host's byte order.
 */
#ifndef FS_WIRE_H
#define FS_WIRE_H

#include <stdint.h>
#include <string.h>

#include "fs_config.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FS_VERSION 1u
#define FS_HEADER_SIZE 8u
#define FS_CRC_SIZE 2u
/* Header, payload and CRC: what COBS carries. */
#define FS_RAW_MAX (FS_HEADER_SIZE + FS_MAX_PAYLOAD + FS_CRC_SIZE)
/* COBS adds one code byte per started 254-byte block (at least one); then the 0x00. */
#define FS_COBS_MAX(n) ((n) + (n) / 254u + 1u)
#define FS_WIRE_MAX (FS_COBS_MAX(FS_RAW_MAX) + 1u)

#define FS_FLAG_MORE 0x80u   /* header flags bit 7: more chunks follow */
#define FS_REASON_MAX 96u    /* ERROR payload: a reason of at most 96 bytes */

typedef enum {
    FS_HELLO = 1,
    FS_LOAD_WEIGHTS = 2,
    FS_TRAIN = 3,
    FS_GET_WEIGHTS = 4,
    FS_EVAL = 5,
    FS_RESET = 6,
    FS_ERROR = 7
} fs_type;

typedef enum {
    FS_OK = 0,
    FS_BAD_REQUEST = 1,
    FS_TOO_LARGE = 2,
    FS_NO_MODEL = 3,
    FS_BUSY = 4,
    FS_INTERNAL = 5,
    FS_NOT_FINITE = 6 /* a loss, weight or input is inf or NaN (training diverged) */
} fs_status;

/* The 8-byte header, decoded. */
typedef struct {
    uint8_t version;
    uint8_t type;
    uint16_t sequence;
    uint16_t length;
    uint8_t status;
    uint8_t flags;
} fs_header;

static inline uint16_t fs_get_u16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t fs_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline float fs_get_f32(const uint8_t *p) {
    uint32_t bits = fs_get_u32(p);
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static inline void fs_put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void fs_put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline void fs_put_f32(uint8_t *p, float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    fs_put_u32(p, bits);
}

#ifdef __cplusplus
}
#endif

#endif /* FS_WIRE_H */
