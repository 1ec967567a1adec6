/* fedsim firmware: the on-device learner, a linear head trained by plain SGD, batch size 1.
 *
 * Mirrors edge/online_head.OnlineHead (without RunningNorm) in float32:
 *   z = W x + b
 *   softmax: p = softmax(z), g = p - onehot(label), loss = -ln max(p[label], 1e-12)
 *   mse:     g = z - y,                            loss = 1/2 |g|^2
 *   W <- W - lr * (g x^T),  b <- b - lr * g      (the gradient is taken before either update)
 * Build with -ffp-contract=off so no compiler fuses a multiply into an add: every product and sum
 * is then rounded as numpy rounds it, and the host and MCU builds agree bit for bit.
 */
#ifndef FS_LEARNER_H
#define FS_LEARNER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FS_LOSS_SOFTMAX 0u
#define FS_LOSS_MSE 1u

typedef struct {
    uint16_t outputs;
    uint16_t features;
    uint8_t loss;    /* FS_LOSS_SOFTMAX or FS_LOSS_MSE */
    float lr;
    float *weight;   /* [outputs][features] row-major, then bias[outputs] */
    float *scratch;  /* outputs floats: logits, then probabilities / gradient */
} fs_head;

/* Floats in a head: outputs * (features + 1). */
uint32_t fs_head_size(uint16_t outputs, uint16_t features);

/* One SGD step on one sample; returns its loss before the step. label is read for softmax (the
 * caller checks label < outputs), y[outputs] for mse. */
float fs_head_step(const fs_head *h, const float *x, uint32_t label, const float *y);

/* The loss of one sample without an update; *correct is 1 when argmax p == label (softmax),
 * always 0 for mse. */
float fs_head_score(const fs_head *h, const float *x, uint32_t label, const float *y,
                    int *correct);

#ifdef __cplusplus
}
#endif

#endif /* FS_LEARNER_H */
