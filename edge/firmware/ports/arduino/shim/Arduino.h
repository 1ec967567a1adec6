/* SHIM — NOT THE ARDUINO CORE. Declarations only, just enough for `make arduino-check` to
 * compile ports/arduino/src/main.cpp with arm-none-eabi-g++ where the real cores (ArduinoCore-
 * mbed for the Nano 33 BLE and the Pico) cannot be installed. Nothing here is defined, linked
 * or run; a real build takes Arduino.h from the core that PlatformIO installs. */
#ifndef FEDSIM_ARDUINO_SHIM_H
#define FEDSIM_ARDUINO_SHIM_H

#include <stddef.h>
#include <stdint.h>

class FedsimShimSerial {
public:
    void begin(unsigned long baud);
    int available();
    int read();
    size_t write(const uint8_t *buffer, size_t size);
};

extern FedsimShimSerial Serial;

unsigned long micros(void);

void setup(void);
void loop(void);

#endif /* FEDSIM_ARDUINO_SHIM_H */
