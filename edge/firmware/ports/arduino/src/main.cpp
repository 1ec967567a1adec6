/* fedsim firmware, port `arduino`: the portable core over Arduino `Serial` (USB CDC on both
 * boards) for the Nano 33 BLE Sense (nRF52840, Cortex-M4F, 64 MHz) and the Raspberry Pi Pico
 * (RP2040, Cortex-M0+, no FPU: floats are done in software). Built by PlatformIO
 * (platformio.ini); `make arduino-check` compiles it against shim/Arduino.h, a declaration-only
 * stand-in, since the Arduino cores are not installed there. Not run on a real board yet. */
#include <Arduino.h>

#include "fedsim_port.h"
#include "fs_device.h"

#if defined(FS_BOARD_NANO33BLE) || defined(ARDUINO_ARDUINO_NANO33BLE)
/* The Sense's sensors: LSM9DS1 IMU, MP34DT05 microphone, HTS221, LPS22HB, APDS9960. None feeds
 * TRAIN yet (caps bit 2 stays clear): they are listed for the registry. */
static const char *const s_sensors[] = {"imu", "microphone", "temperature", "humidity",
                                        "pressure", "light"};
static const fs_board s_board = {"nano33ble", "cortex-m4f", 64000000u, 256u * 1024u,
                                 1024u * 1024u, FS_CAP_TIME, 6, s_sensors};
#elif defined(FS_BOARD_PICO) || defined(ARDUINO_RASPBERRY_PI_PICO)
#ifdef F_CPU
#define FS_PICO_HZ ((uint32_t)F_CPU)
#else
#define FS_PICO_HZ 125000000u
#endif
static const fs_board s_board = {"pico", "cortex-m0+", FS_PICO_HZ, 264u * 1024u,
                                 2048u * 1024u, FS_CAP_TIME, 0, NULL};
#else
#error "fedsim: unknown board; build with -DFS_BOARD_NANO33BLE or -DFS_BOARD_PICO"
#endif

extern "C" const fs_board *fs_port_board(void) {
    return &s_board;
}

extern "C" void fs_port_write(const uint8_t *data, size_t len) {
    Serial.write(data, len);
}

extern "C" uint32_t fs_port_time_us(void) {
    return (uint32_t)micros();
}

extern "C" uint32_t fs_port_energy_uj(void) {
    return FS_NOT_MEASURED;
}

extern "C" int fs_port_sensor_sample(float *, uint16_t, uint8_t, uint32_t *, float *, uint16_t) {
    return 0;
}

void setup() {
    Serial.begin(115200); /* USB CDC: the baud rate is nominal */
    fs_device_init();
}

void loop() {
    while (Serial.available() > 0) {
        const int c = Serial.read();
        if (c >= 0) {
            fs_device_feed((uint8_t)c);
        }
    }
}
