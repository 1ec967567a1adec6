/* fedsim firmware: the port seam. The core calls these functions and nothing else of the board;
 * each port (host, mps2-an386, arduino, the test tools) defines all of them.
 *
 * Input is pushed, not pulled: the port's main loop hands every received byte to
 * fs_device_feed() (fs_device.h), in order, one at a time, from one thread of execution.
 */
#ifndef FEDSIM_PORT_H
#define FEDSIM_PORT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A reading the port does not take: train_us / energy_uj are sent as this value. */
#define FS_NOT_MEASURED 0xFFFFFFFFu

/* HELLO caps bits (PROTOCOL.md). */
#define FS_CAP_TIME 0x01u   /* fs_port_time_us() is meaningful */
#define FS_CAP_ENERGY 0x02u /* fs_port_energy_uj() is meaningful */
#define FS_CAP_SENSOR 0x04u /* fs_port_sensor_sample() yields samples (TRAIN with count 0) */

/* What the HELLO reply says about the board. Strings are UTF-8, cut at 255 bytes. */
typedef struct {
    const char *board;           /* e.g. "mps2-an386" */
    const char *core;            /* e.g. "cortex-m4f" */
    uint32_t clock_hz;           /* 0 when unknown */
    uint32_t sram_bytes;         /* 0 when unknown */
    uint32_t flash_bytes;        /* 0 when unknown */
    uint8_t caps;                /* FS_CAP_* */
    uint8_t sensor_count;        /* entries in sensors */
    const char *const *sensors;  /* e.g. {"imu"}; may be NULL when sensor_count is 0 */
} fs_board;

/* The board description; the core reads it for every HELLO. */
const fs_board *fs_port_board(void);

/* Send one complete reply frame (COBS bytes and the trailing 0x00). The core calls it exactly
 * once per reply, so a port may count, drop or duplicate whole replies. */
void fs_port_write(const uint8_t *data, size_t len);

/* A free-running microsecond clock (wraps at 2^32); only differences are used. Ports without
 * FS_CAP_TIME return FS_NOT_MEASURED. */
uint32_t fs_port_time_us(void);

/* A free-running energy counter in microjoules (wraps at 2^32); FS_NOT_MEASURED without
 * FS_CAP_ENERGY. */
uint32_t fs_port_energy_uj(void);

/* One on-device training sample for a head of `features` inputs and `outputs` outputs: fill
 * x[features] and either *label (loss 0, softmax) or y[outputs] (loss 1, mse). Returns 1 when a
 * sample was written, 0 when none is ready. Only called on ports with FS_CAP_SENSOR. */
int fs_port_sensor_sample(float *x, uint16_t features, uint8_t loss, uint32_t *label, float *y,
                          uint16_t outputs);

#ifdef __cplusplus
}
#endif

#endif /* FEDSIM_PORT_H */
