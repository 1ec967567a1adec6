/* size_stub: a do-nothing port and entry point, linked with the core for `make arduino-check`
 * so the size report also shows what the C library adds (expf, logf, and on the Cortex-M0+ the
 * software floating point). Not a firmware: it is never run. */
#include "fedsim_port.h"
#include "fs_device.h"

static const fs_board s_board = {"size", "none", 0, 0, 0, 0, 0, 0};
const fs_board *fs_port_board(void) { return &s_board; }
void fs_port_write(const uint8_t *data, size_t len) { (void)data; (void)len; }
uint32_t fs_port_time_us(void) { return FS_NOT_MEASURED; }
/* fs_port_energy_uj, fs_port_sensor_sample: ports/common/no_sensors.c */

void Reset_Handler(void);
void Reset_Handler(void) {
    volatile uint8_t byte = 0;
    fs_device_init();
    for (;;) {
        fs_device_feed(byte);
    }
}
