/* fedsim firmware, port `qemu-bench`: vector table and reset for any Cortex-M QEMU machine. With
 * a hardware FPU (__ARM_FP) it is switched on first: a float instruction with CP10/CP11 off is a
 * UsageFault. Interrupts stay off: the bench polls SysTick. */
#include <stdint.h>

extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[], _estack[];

int main(void);
void Reset_Handler(void);
void Default_Handler(void);

typedef union {
    void (*handler)(void);
    uint32_t *stack;
} vector;

/* Stack, reset, and the 14 system exceptions: all faults stop in Default_Handler. */
__attribute__((section(".isr_vector"), used)) const vector fs_vectors[16] = {
    {.stack = _estack},           {.handler = Reset_Handler},   {.handler = Default_Handler},
    {.handler = Default_Handler}, {.handler = Default_Handler}, {.handler = Default_Handler},
    {.handler = Default_Handler}, {.handler = Default_Handler}, {.handler = 0},
    {.handler = 0},               {.handler = 0},               {.handler = Default_Handler},
    {.handler = Default_Handler}, {.handler = 0},               {.handler = Default_Handler},
    {.handler = Default_Handler},
};

/* A fault: spin, and the host's timeout reports it. */
void Default_Handler(void) {
    for (;;) {
    }
}

void Reset_Handler(void) {
    uint32_t *src = _sidata, *dst;
#ifdef __ARM_FP
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: CP10 and CP11 full access */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    for (dst = _sdata; dst < _edata;) {
        *dst++ = *src++;
    }
    for (dst = _sbss; dst < _ebss;) {
        *dst++ = 0;
    }
    main();
    for (;;) {
    }
}
