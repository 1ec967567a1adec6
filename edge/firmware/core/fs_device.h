/* fedsim firmware: the device. Bytes in (fs_device_feed), replies out (fs_port_write).
 *
 * The device is one static instance: its buffers are sized by fs_config.h and live in .bss
 * (the received frame, the reply being built, the last reply on the wire, the weights).
 */
#ifndef FS_DEVICE_H
#define FS_DEVICE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Power-on state: no head, no replay memory, nothing half-received. Call before the first byte
 * (a port that simulates a reboot calls it again). */
void fs_device_init(void);

/* One received byte. A 0x00 ends a frame, which is then checked and answered (or dropped);
 * bytes of a frame longer than the buffer are dropped up to the next 0x00. */
void fs_device_feed(uint8_t byte);

/* Samples trained since fs_device_init() (for ports that inject faults, and for logs). */
uint32_t fs_device_steps(void);

#ifdef __cplusplus
}
#endif

#endif /* FS_DEVICE_H */
