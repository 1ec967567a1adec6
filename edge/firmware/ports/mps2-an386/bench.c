/* bench: instructions per on-device SGD step (softmax head, 16 features x 4 classes), counted
 * by QEMU:
 *   qemu-system-arm -M mps2-an386 -nographic -icount shift=0,align=off,sleep=off \
 *     -semihosting-config enable=on,target=native -kernel build/qemu/bench.elf
 * Under -icount shift=0 the virtual clock advances exactly 1 ns per instruction, and SysTick
 * counts that clock at 25 MHz: one tick is 40 instructions. Timing STEPS steps (minus the same
 * loop calling an empty function) resolves 40 / STEPS instructions per step. The numbers are
 * deterministic: the same image prints the same counts on every run. */
#include "board.h"
#include "fs_device.h"
#include "fs_frame.h"
#include "fs_learner.h"

#define FEATURES 16u
#define CLASSES 4u
#define STEPS 2000u
#define SAMPLES 64u /* distinct samples, cycled */
#define INSTRUCTIONS_PER_TICK (1000000000u / BOARD_CLOCK_HZ)

typedef float (*step_fn)(const fs_head *, const float *, uint32_t, const float *);

static float s_w[CLASSES * (FEATURES + 1u)], s_scratch[CLASSES], s_x[SAMPLES][FEATURES];
static volatile float s_sink;
static uint8_t s_payload[FS_MAX_PAYLOAD], s_wire[FS_WIRE_MAX];

static float empty_step(const fs_head *h, const float *x, uint32_t label, const float *y) {
    (void)h;
    (void)x;
    (void)label;
    (void)y;
    return 0.0f;
}

static void sysTick_free_running(void) {
    SYST_CSR = 0;
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 0x5u; /* CPU clock, no interrupt: nothing else runs while we count */
}

static uint32_t ticks_since(uint32_t start) {
    return (start - SYST_CVR) & 0xFFFFFFu; /* it counts down */
}

__attribute__((noinline)) static uint32_t time_steps(step_fn fn, const fs_head *h) {
    uint32_t k, start = SYST_CVR;
    for (k = 0; k < STEPS; k++) {
        s_sink = s_sink + fn(h, s_x[k % SAMPLES], k % CLASSES, 0);
    }
    return ticks_since(start);
}

/* The wire bytes of a request with s_payload into s_wire; returns their number. */
static size_t encode_frame(uint8_t type, uint16_t seq, uint16_t length) {
    fs_header h = {FS_VERSION, 0, 0, 0, 0, 0};
    h.type = type;
    h.sequence = seq;
    h.length = length;
    return fs_frame_encode(&h, s_payload, s_wire, sizeof s_wire).len;
}

static void feed(size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        fs_device_feed(s_wire[i]);
    }
}

/* Instructions to take a TRAIN frame of `count` samples through the whole device: COBS, CRC,
 * parsing, the steps, the reply. */
static uint32_t time_train_frame(uint16_t count, uint16_t seq) {
    uint32_t k, j, n = 2, start;
    size_t wire;
    fs_put_u16(s_payload, count);
    for (k = 0; k < count; k++) {
        for (j = 0; j < FEATURES; j++, n += 4) {
            fs_put_f32(s_payload + n, s_x[k % SAMPLES][j]);
        }
        fs_put_u32(s_payload + n, k % CLASSES);
        n += 4;
    }
    wire = encode_frame(FS_TRAIN, seq, (uint16_t)n);
    start = SYST_CVR;
    feed(wire);
    return ticks_since(start) * INSTRUCTIONS_PER_TICK;
}

static void load_head_into_device(void) {
    uint32_t i, n = CLASSES * (FEATURES + 1u);
    fs_put_u16(s_payload, CLASSES);
    fs_put_u16(s_payload + 2, FEATURES);
    fs_put_u32(s_payload + 4, 0);
    fs_put_f32(s_payload + 8, 0.05f);
    fs_put_u32(s_payload + 12, 0);
    for (i = 0; i < n; i++) {
        fs_put_f32(s_payload + 16 + 4 * i, s_w[i]);
    }
    feed(encode_frame(FS_LOAD_WEIGHTS, 1, (uint16_t)(16 + 4 * n)));
}

static void put_hundredths(const char *name, uint32_t hundredths) {
    board_puts(name);
    board_putu(hundredths / 100u);
    board_putc('.');
    board_putc((uint8_t)('0' + hundredths / 10u % 10u));
    board_putc((uint8_t)('0' + hundredths % 10u));
    board_putc('\n');
}

int main(void) {
    fs_head head = {CLASSES, FEATURES, FS_LOSS_SOFTMAX, 0.05f, s_w, s_scratch};
    uint32_t i, j, step, empty, one, thirty;
    board_init();
    for (i = 0; i < SAMPLES; i++) {
        for (j = 0; j < FEATURES; j++) {
            s_x[i][j] = (float)((int)((i * 7u + j * 3u) % 11u) - 5) * 0.25f;
        }
    }
    for (i = 0; i < CLASSES * (FEATURES + 1u); i++) {
        s_w[i] = (float)((int)(i % 5u) - 2) * 0.01f;
    }
    sysTick_free_running();
    step = time_steps(fs_head_step, &head);
    empty = time_steps(empty_step, &head);
    fs_device_init();
    board_mute(1);
    load_head_into_device();
    one = time_train_frame(1, 2);
    thirty = time_train_frame(30, 3);
    board_mute(0);
    board_puts("bench: softmax head, 16 features x 4 classes, float32, -ffp-contract=off\n");
    board_puts("step_ticks=");
    board_putu(step);
    board_puts(" empty_loop_ticks=");
    board_putu(empty);
    board_puts(" steps=");
    board_putu(STEPS);
    board_putc('\n');
    put_hundredths("instructions_per_step=",
                   (step - empty) * INSTRUCTIONS_PER_TICK * 100u / STEPS);
    board_puts("train_frame_instructions: 1 sample ");
    board_putu(one);
    board_puts(", 30 samples ");
    board_putu(thirty);
    board_putc('\n');
    put_hundredths("instructions_per_train_sample=", (thirty - one) * 100u / 29u);
    board_exit(0);
    return 0;
}
