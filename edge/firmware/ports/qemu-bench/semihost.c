/* fedsim firmware, port `qemu-bench`: semihosting calls (see semihost.h). */
#include "semihost.h"

#define SYS_WRITE0 0x04u
#define SYS_EXIT 0x18u
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u
#define ADP_STOPPED_RUN_TIME_ERROR 0x20023u

static void semihost_call(uint32_t operation, const void *argument) {
    register uint32_t op __asm__("r0") = operation;
    register const void *arg __asm__("r1") = argument;
    __asm__ volatile("bkpt 0xab" : "+r"(op) : "r"(arg) : "memory");
}

void semihost_puts(const char *text) {
    semihost_call(SYS_WRITE0, text);
}

void semihost_putu(uint32_t value) {
    char digits[11];
    int n = 10;
    digits[n] = '\0';
    do {
        digits[--n] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0);
    semihost_puts(digits + n);
}

void semihost_exit(int code) {
    /* On 32-bit Arm SYS_EXIT takes the reason itself in r1, not a pointer to it. */
    semihost_call(SYS_EXIT, (const void *)(code == 0 ? ADP_STOPPED_APPLICATION_EXIT
                                                     : ADP_STOPPED_RUN_TIME_ERROR));
    for (;;) {
    }
}
