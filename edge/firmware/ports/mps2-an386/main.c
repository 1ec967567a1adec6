/* fedsim firmware, port `mps2-an386`: the device loop. Bytes are polled from UART0; with none
 * waiting the core sleeps until the RX interrupt (or the next SysTick) wakes it. */
#include "board.h"
#include "fs_device.h"

int main(void) {
    int c;
    board_init();
    fs_device_init();
    for (;;) {
        c = board_getc();
        if (c >= 0) {
            fs_device_feed((uint8_t)c);
        } else {
            board_wait_for_input();
        }
    }
}
