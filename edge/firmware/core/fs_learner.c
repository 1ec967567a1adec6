/* fedsim firmware: the on-device learner (see fs_learner.h). */
#include "fs_learner.h"

#include <math.h>

#define FS_P_FLOOR 1e-12f /* tinyol floors p[label] before the log */

uint32_t fs_head_size(uint16_t outputs, uint16_t features) {
    return (uint32_t)outputs * ((uint32_t)features + 1u);
}

/* scratch[i] = sum_j W[i][j] x[j] + b[i], the sum taken left to right. */
static void forward(const fs_head *h, const float *x) {
    const float *bias = h->weight + (uint32_t)h->outputs * h->features;
    uint16_t i, j;
    for (i = 0; i < h->outputs; i++) {
        const float *row = h->weight + (uint32_t)i * h->features;
        float acc = 0.0f;
        for (j = 0; j < h->features; j++) {
            acc += row[j] * x[j];
        }
        h->scratch[i] = acc + bias[i];
    }
}

/* Logits in scratch become probabilities (max subtracted before expf, as numpy does). */
static void softmax(const fs_head *h) {
    float *z = h->scratch;
    float top = z[0];
    float sum = 0.0f;
    uint16_t i;
    for (i = 1; i < h->outputs; i++) {
        if (z[i] > top) {
            top = z[i];
        }
    }
    for (i = 0; i < h->outputs; i++) {
        z[i] = expf(z[i] - top);
        sum += z[i];
    }
    for (i = 0; i < h->outputs; i++) {
        z[i] = z[i] / sum;
    }
}

/* The loss of the sample; leaves dloss/dz in scratch. Needs forward() first. */
static float loss_and_gradient(const fs_head *h, uint32_t label, const float *y) {
    float *g = h->scratch;
    float loss = 0.0f;
    uint16_t i;
    if (h->loss == FS_LOSS_SOFTMAX) {
        softmax(h);
        loss = -logf(g[label] > FS_P_FLOOR ? g[label] : FS_P_FLOOR);
        g[label] -= 1.0f;
        return loss;
    }
    for (i = 0; i < h->outputs; i++) {
        g[i] = g[i] - y[i];
        loss += (0.5f * g[i]) * g[i];
    }
    return loss;
}

float fs_head_step(const fs_head *h, const float *x, uint32_t label, const float *y) {
    float *bias = h->weight + (uint32_t)h->outputs * h->features;
    const float lr = h->lr;
    float loss;
    uint16_t i, j;
    forward(h, x);
    loss = loss_and_gradient(h, label, y);
    for (i = 0; i < h->outputs; i++) {
        float *row = h->weight + (uint32_t)i * h->features;
        const float g = h->scratch[i];
        for (j = 0; j < h->features; j++) {
            row[j] -= lr * (g * x[j]);
        }
        bias[i] -= lr * g;
    }
    return loss;
}

float fs_head_score(const fs_head *h, const float *x, uint32_t label, const float *y,
                    int *correct) {
    uint16_t i, best = 0;
    forward(h, x);
    *correct = 0;
    if (h->loss != FS_LOSS_SOFTMAX) {
        return loss_and_gradient(h, label, y);
    }
    softmax(h);
    for (i = 1; i < h->outputs; i++) {
        if (h->scratch[i] > h->scratch[best]) {
            best = i; /* the first maximum, as numpy's argmax */
        }
    }
    *correct = best == label;
    return -logf(h->scratch[label] > FS_P_FLOOR ? h->scratch[label] : FS_P_FLOOR);
}
