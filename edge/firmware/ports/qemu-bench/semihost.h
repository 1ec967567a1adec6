/* fedsim firmware, port `qemu-bench`: output and exit through Arm semihosting (BKPT 0xAB), so one
 * image source serves every QEMU Cortex-M machine, whatever UART it has or lacks. Needs QEMU's
 * -semihosting-config enable=on,target=native. */
#ifndef FS_SEMIHOST_H
#define FS_SEMIHOST_H

#include <stdint.h>

void semihost_puts(const char *text);
void semihost_putu(uint32_t value);

/* Ends QEMU with exit status 0 (code 0) or 1 (anything else). */
void semihost_exit(int code);

#endif /* FS_SEMIHOST_H */
