/* The port seam's defaults for a board with no sensors and no energy meter (the host pty, QEMU,
 * the tests): HELLO's caps say so (no FS_CAP_SENSOR, no FS_CAP_ENERGY), and these are never
 * asked for anything else. A board that has them defines both functions itself instead. */
#include "fedsim_port.h"

uint32_t fs_port_energy_uj(void) {
    return FS_NOT_MEASURED;
}

int fs_port_sensor_sample(float *x, uint16_t features, uint8_t loss, uint32_t *label, float *y,
                          uint16_t outputs) {
    (void)x;
    (void)features;
    (void)loss;
    (void)label;
    (void)y;
    (void)outputs;
    return 0;
}
