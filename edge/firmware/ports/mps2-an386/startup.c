/* fedsim firmware, port `mps2-an386`: vector table and reset. The FPU is switched on before
 * anything else runs: the first float instruction with CP10/CP11 off is a UsageFault. */
#include <stdint.h>

#include "board.h"

extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[], _estack[];

int main(void);
void Reset_Handler(void);
void Default_Handler(void);
void SysTick_Handler(void);
void UART0_RX_Handler(void);

/* An entry is the initial stack pointer or a handler; a union keeps the table in ISO C. */
typedef union {
    void (*handler)(void);
    uint32_t *stack;
} vector;

__attribute__((section(".isr_vector"), used)) const vector fs_vectors[16 + 2] = {
    {.stack = _estack},           {.handler = Reset_Handler},   {.handler = Default_Handler},
    {.handler = Default_Handler}, {.handler = Default_Handler}, {.handler = Default_Handler},
    {.handler = Default_Handler}, {.handler = 0},               {.handler = 0},
    {.handler = 0},               {.handler = 0},               {.handler = Default_Handler},
    {.handler = Default_Handler}, {.handler = 0},               {.handler = Default_Handler},
    {.handler = SysTick_Handler}, {.handler = UART0_RX_Handler}, {.handler = Default_Handler},
};

/* A fault: stop here (the host times out and reports the device as silent). */
void Default_Handler(void) {
    for (;;) {
    }
}

void Reset_Handler(void) {
    uint32_t *src = _sidata, *dst;
    SCB_CPACR |= 0xFu << 20; /* CP10 and CP11: full access */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
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
