/* fedsim firmware, port `mps2-an386`: UART0, SysTick and the port seam (see board.h). */
#include "board.h"

#include "fedsim_port.h"

#define TICKS_PER_MS (BOARD_CLOCK_HZ / 1000u)
#define TICKS_PER_US (BOARD_CLOCK_HZ / 1000000u)

static volatile uint32_t s_ms;
static int s_muted;

static const fs_board s_board = {"mps2-an386", "cortex-m4f", BOARD_CLOCK_HZ, BOARD_SRAM_BYTES,
                                 BOARD_FLASH_BYTES, FS_CAP_TIME, 0, 0};

void SysTick_Handler(void);
void UART0_RX_Handler(void);

void SysTick_Handler(void) {
    s_ms++;
}

/* Only a wake-up: bytes are read by polling. The RX interrupt status stays set until written
 * back, so clear it here or the line never falls and the next byte raises no new interrupt. */
void UART0_RX_Handler(void) {
    UART0->intstatus = UART_INT_RX;
}

void board_init(void) {
    UART0->bauddiv = BOARD_CLOCK_HZ / BOARD_BAUD;
    UART0->ctrl = UART_TX_EN | UART_RX_EN | UART_RX_INTEN;
    NVIC_ISER0 = 1u << UART0_RX_IRQ;
    SYST_RVR = TICKS_PER_MS - 1u;
    SYST_CVR = 0;
    SYST_CSR = 0x7u;
}

int board_getc(void) {
    if (UART0->state & UART_RXFULL) {
        return (int)(UART0->data & 0xFFu);
    }
    return -1;
}

void board_wait_for_input(void) {
    /* With interrupts masked an interrupt that arrives between the check and the WFI stays
     * pending, and a pending interrupt ends WFI even while masked: no byte can slip past. */
    __asm__ volatile("cpsid i" ::: "memory");
    if (!(UART0->state & UART_RXFULL)) {
        __asm__ volatile("wfi" ::: "memory");
    }
    __asm__ volatile("cpsie i" ::: "memory");
}

void board_putc(uint8_t byte) {
    while (UART0->state & UART_TXFULL) {
    }
    UART0->data = byte;
}

void board_puts(const char *text) {
    while (*text != '\0') {
        board_putc((uint8_t)*text++);
    }
}

void board_putu(uint32_t value) {
    char digits[10];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0);
    while (n > 0) {
        board_putc((uint8_t)digits[--n]);
    }
}

void board_mute(int on) {
    s_muted = on;
}

void board_exit(int code) {
    /* SYS_EXIT with ADP_Stopped_ApplicationExit (0x20026); QEMU takes the code from it. */
    register uint32_t op __asm__("r0") = 0x18u;
    register uint32_t arg __asm__("r1") = code == 0 ? 0x20026u : 0x20024u;
    __asm__ volatile("bkpt 0xab" : : "r"(op), "r"(arg) : "memory");
    for (;;) {
    }
}

const fs_board *fs_port_board(void) {
    return &s_board;
}

void fs_port_write(const uint8_t *data, size_t len) {
    size_t i;
    for (i = 0; i < len && !s_muted; i++) {
        board_putc(data[i]);
    }
}

/* Milliseconds from the interrupt, the rest from the down-counting SysTick value; read again
 * when a tick came in between. */
uint32_t fs_port_time_us(void) {
    uint32_t ms, value;
    do {
        ms = s_ms;
        value = SYST_CVR;
    } while (ms != s_ms);
    return ms * 1000u + (TICKS_PER_MS - 1u - value) / TICKS_PER_US;
}

/* fs_port_energy_uj, fs_port_sensor_sample: ports/common/no_sensors.c */
