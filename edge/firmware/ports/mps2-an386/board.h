/* fedsim firmware, port `mps2-an386`: the board as QEMU models it (Cortex-M4F, 25 MHz,
 * CMSDK APB UART0 at 0x40004000 with its RX interrupt on IRQ 0, SysTick on the 25 MHz clock).
 * Memory map (AN386): 4 MiB ZBT SSRAM1 at 0x00000000 for code ("flash"), 4 MiB ZBT SSRAM2/3
 * at 0x20000000 for data. */
#ifndef FS_BOARD_H
#define FS_BOARD_H

#include <stdint.h>

#define BOARD_CLOCK_HZ 25000000u
#define BOARD_FLASH_BYTES 0x400000u
#define BOARD_SRAM_BYTES 0x400000u
#define BOARD_BAUD 115200u

typedef struct {
    volatile uint32_t data;      /* read: received byte (clears RXFULL); write: send */
    volatile uint32_t state;     /* bit 0 TX full, bit 1 RX full */
    volatile uint32_t ctrl;      /* bit 0 TX enable, 1 RX enable, 3 RX interrupt enable */
    volatile uint32_t intstatus; /* write 1 to clear */
    volatile uint32_t bauddiv;
} cmsdk_uart;

#define UART0 ((cmsdk_uart *)0x40004000u)
#define UART_TXFULL 0x1u
#define UART_RXFULL 0x2u
#define UART_TX_EN 0x1u
#define UART_RX_EN 0x2u
#define UART_RX_INTEN 0x8u
#define UART_INT_RX 0x2u

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u) /* 1 enable, 2 interrupt, 4 CPU clock */
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define NVIC_ISER0 (*(volatile uint32_t *)0xE000E100u)
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

#define UART0_RX_IRQ 0u

/* UART0 at BOARD_BAUD and a 1 ms SysTick interrupt (the microsecond clock). */
void board_init(void);

/* The next received byte, or -1 when none is waiting. */
int board_getc(void);

/* Sleeps (WFI) until a byte may have arrived: woken by the UART RX interrupt, or at the latest
 * by the next SysTick, so a lost interrupt costs a millisecond, never a hang. */
void board_wait_for_input(void);

void board_putc(uint8_t byte);
void board_puts(const char *text);
void board_putu(uint32_t value);

/* Replies are dropped while muted (the bench measures without the UART). */
void board_mute(int on);

/* Ends QEMU through semihosting SYS_EXIT (needs -semihosting-config enable=on). */
void board_exit(int code);

#endif /* FS_BOARD_H */
