/* train_bench: QEMU instructions per on-device SGD step of the project's learner (fs_head_step:
 * forward, softmax gradient, update of a float32 linear head, batch 1) at several head sizes, on
 * any Cortex-M machine QEMU emulates. Run with
 *   qemu-system-arm -M <machine> -nographic -monitor none -icount shift=0,align=off,sleep=off \
 *     -semihosting-config enable=on,target=native -kernel build/qemu-<core>/train_bench.elf
 * Under -icount shift=0 the virtual clock advances exactly 1 ns per guest instruction, and
 * SysTick (CPU clock source, BENCH_CLOCK_HZ) counts that clock, so one tick is 1e9 / clock
 * instructions. A loop of `steps` steps minus the same loop calling an empty function gives the
 * step's instructions to 1e9 / clock / steps. The counts are the same on every run.
 *
 * One line per size, machine-readable:
 *   core=m4f machine=mps2-an386 features=16 classes=4 macs=64 steps=1024 instructions_x100=...
 * where instructions_x100 is 100 x the instructions of one step, and one calibration line
 *   calibration=... known=...
 * timing a loop of a known instruction count, which checks the ticks-to-instructions rule. */
#include <stdint.h>

#include "fs_learner.h"
#include "semihost.h"

#ifndef BENCH_CORE
#error "BENCH_CORE (e.g. \"m4f\"), BENCH_MACHINE and BENCH_CLOCK_HZ come from the Makefile"
#endif

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u) /* 1 enable, 4 CPU clock */
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_MASK 0xFFFFFFu

/* 100 x instructions per SysTick tick: 1e11 / clock is whole for the 16, 20 and 25 MHz boards. */
#define INSTRUCTIONS_X100_PER_TICK (100000000000ull / BENCH_CLOCK_HZ)

#define MAX_FEATURES 128u
#define MAX_CLASSES 12u
#define SAMPLES 4u          /* distinct samples, cycled; the M0 board has 16 KiB of SRAM */
#define MAC_BUDGET 65536u   /* forward MACs timed per size: steps = MAC_BUDGET / macs */
#define CALIBRATION_LOOPS 100000u

typedef struct {
    uint16_t features, classes;
} head_size;

#ifndef BENCH_TRACE
/* Sizes share classes and features both ways, so the per-class work (expf, the division, the
 * bias) and the per-MAC work do not move together, and a fit can tell them apart. */
static const head_size SIZES[] = {{16u, 4u}, {64u, 4u}, {64u, 8u}, {128u, 8u}, {128u, 12u}};
#else
/* BENCH_TRACE: two steps each of two sizes with the same classes, bracketed by trace_begin() and
 * trace_end() for a QEMU `-d exec -singlestep` trace: their difference is pure per-MAC work,
 * whose instruction mix gives the cycles (benchmarks/train_kernels.py). */
static const head_size SIZES[] = {{32u, 8u}, {64u, 8u}};
#define TRACE_STEPS 2u
#endif

typedef float (*step_fn)(const fs_head *, const float *, uint32_t, const float *);

static float s_w[MAX_CLASSES * (MAX_FEATURES + 1u)], s_scratch[MAX_CLASSES];
static float s_x[SAMPLES][MAX_FEATURES];
static volatile float s_sink;
static uint32_t s_lcg = 12345u;

/* Uniform in [-scale, scale), from a 32-bit LCG: no exact zeros, so no soft-float shortcut. */
static float uniform(float scale) {
    s_lcg = s_lcg * 1664525u + 1013904223u;
    return ((float)(s_lcg >> 8) * (1.0f / 8388608.0f) - 1.0f) * scale;
}

static float empty_step(const fs_head *h, const float *x, uint32_t label, const float *y) {
    (void)h;
    (void)x;
    (void)label;
    (void)y;
    return 0.0f;
}

static uint32_t ticks_since(uint32_t start) {
    return (start - SYST_CVR) & SYST_MASK; /* SysTick counts down */
}

__attribute__((noinline)) static uint32_t time_steps(step_fn fn, const fs_head *h,
                                                     uint32_t steps) {
    uint32_t k, start = SYST_CVR;
    for (k = 0; k < steps; k++) {
        s_sink = fn(h, s_x[k % SAMPLES], k % h->outputs, 0);
    }
    return ticks_since(start);
}

/* CALIBRATION_LOOPS x 2 instructions (subs, bne) plus a few to enter and leave. */
__attribute__((noinline)) static uint32_t time_known_loop(void) {
    uint32_t n = CALIBRATION_LOOPS, start = SYST_CVR;
#if __ARM_ARCH_ISA_THUMB == 1
#define SUBS_ONE "sub %0, #1" /* GCC's Thumb-1 output is in divided syntax: sub sets flags */
#else
#define SUBS_ONE "subs %0, #1"
#endif
    __asm__ volatile("1:\n\t" SUBS_ONE "\n\tbne 1b" : "+l"(n) : : "cc");
    return ticks_since(start);
}

static void put_field(const char *name, uint32_t value) {
    semihost_puts(name);
    semihost_putu(value);
}

#ifdef BENCH_TRACE
/* Markers the trace is cut at: noinline, and distinct, so each has its own address. */
__attribute__((noinline)) void trace_begin(uint32_t features);
__attribute__((noinline)) void trace_end(uint32_t features);
void trace_begin(uint32_t features) {
    s_sink = (float)features;
}
void trace_end(uint32_t features) {
    s_sink = (float)(features + 1u);
}
#endif

static void bench_size(head_size size) {
    fs_head head = {size.classes, size.features, FS_LOSS_SOFTMAX, 0.05f, s_w, s_scratch};
    uint32_t i, j, macs = (uint32_t)size.features * size.classes, steps = MAC_BUDGET / macs;
    uint32_t step_ticks, empty_ticks;
    uint64_t x100;
    for (i = 0; i < SAMPLES; i++) {
        for (j = 0; j < size.features; j++) {
            s_x[i][j] = uniform(1.0f);
        }
    }
    for (i = 0; i < fs_head_size(size.classes, size.features); i++) {
        s_w[i] = uniform(0.1f);
    }
#ifdef BENCH_TRACE
    trace_begin(size.features);
    (void)time_steps(fs_head_step, &head, TRACE_STEPS);
    trace_end(size.features);
    steps = TRACE_STEPS;
#endif
    step_ticks = time_steps(fs_head_step, &head, steps);
    empty_ticks = time_steps(empty_step, &head, steps);
    x100 = (uint64_t)(step_ticks - empty_ticks) * INSTRUCTIONS_X100_PER_TICK / steps;
    semihost_puts("core=" BENCH_CORE " machine=" BENCH_MACHINE);
    put_field(" features=", size.features);
    put_field(" classes=", size.classes);
    put_field(" macs=", macs);
    put_field(" steps=", steps);
    put_field(" instructions_x100=", (uint32_t)x100);
    semihost_puts("\n");
}

int main(void) {
    uint32_t i, calibration;
    SYST_CSR = 0;
    SYST_RVR = SYST_MASK;
    SYST_CVR = 0;
    SYST_CSR = 0x5u; /* CPU clock, no interrupt: nothing else runs while we count */
    calibration = time_known_loop();
    put_field("calibration=",
              (uint32_t)((uint64_t)calibration * INSTRUCTIONS_X100_PER_TICK / 100u));
    put_field(" known=", 2u * CALIBRATION_LOOPS);
    semihost_puts("\n");
    for (i = 0; i < sizeof SIZES / sizeof SIZES[0]; i++) {
        bench_size(SIZES[i]);
    }
    semihost_exit(0);
    return 0;
}
