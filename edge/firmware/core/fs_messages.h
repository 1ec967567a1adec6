/* fedsim firmware: the message handlers behind fs_device (internal to the core).
 *
 * A handler reads one checked request and fills in a reply: payload, status and flags. The
 * device turns a non-OK status into an ERROR frame whose payload is the reason.
 */
#ifndef FS_MESSAGES_H
#define FS_MESSAGES_H

#include <stdint.h>

#include "fs_wire.h"

typedef struct {
    uint8_t *payload; /* FS_MAX_PAYLOAD bytes */
    uint16_t length;
    uint8_t status;   /* fs_status */
    uint8_t flags;
} fs_reply;

/* Forget the head and any half-loaded one (power-on, RESET). */
void fs_messages_reset(void);

/* Answer one request whose frame checked (version 1, CRC, length). */
void fs_messages_handle(const fs_header *h, const uint8_t *payload, fs_reply *reply);

/* Samples trained since the last fs_messages_reset(). */
uint32_t fs_messages_steps(void);

/* The HELLO reply (fs_hello.c). */
void fs_hello_handle(const fs_header *h, fs_reply *reply);

/* Reason helpers (fs_reply.c): start an error reply, then append text and numbers; the reason
 * is cut at 96 bytes. fs_reply_fail() writes "<what><value><rest>". */
void fs_reply_error(fs_reply *r, fs_status status, const char *text);
void fs_reply_text(fs_reply *r, const char *text);
void fs_reply_uint(fs_reply *r, uint32_t value);
void fs_reply_fail(fs_reply *r, fs_status status, const char *what, uint32_t value,
                   const char *rest);

#endif /* FS_MESSAGES_H */
