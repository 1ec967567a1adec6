/* fedsim firmware: the message handlers (PROTOCOL.md, "Messages"). */
#include "fs_messages.h"

#include <math.h>

#include "fedsim_port.h"
#include "fs_learner.h"

#define FS_LOAD_HEADER 16u /* outputs, features, loss, reserved x3, lr, offset */
#define FS_GET_MAX_FLOATS ((FS_MAX_PAYLOAD - 4u) / 4u)
/* The reason of a TRAIN answered NOT_FINITE (edge/agent.py says the same). */
#define FS_DIVERGED "training diverged (a loss or weight is not finite): head forgotten, load it again"

static float s_weights[FS_MAX_FLOATS];
static float s_scratch[FS_MAX_OUTPUTS];
static float s_x[FS_MAX_FEATURES]; /* the sample being trained on, decoded */
static float s_y[FS_MAX_OUTPUTS];

static struct {
    fs_head head;
    uint32_t lr_bits;  /* the lr every chunk of a load must repeat */
    uint32_t size;     /* floats in the head */
    uint32_t loaded;   /* floats received so far, in order from 0 */
    uint8_t loading;   /* a load begun at offset 0 is under way */
    uint8_t ready;     /* [0, size) received: the head can train */
    uint32_t steps;    /* samples trained since power-on */
} s_model;

/* The index of the first of n floats at p (4 bytes apart) that is inf or NaN, or n. */
static uint32_t first_non_finite(const uint8_t *p, uint32_t n) {
    uint32_t i;
    for (i = 0; i < n && isfinite(fs_get_f32(p + 4u * i)); i++) {
    }
    return i;
}

/* The index of the first weight that is inf or NaN, or the head's size. */
static uint32_t first_non_finite_weight(void) {
    uint32_t i;
    for (i = 0; i < s_model.size && isfinite(s_weights[i]); i++) {
    }
    return i;
}

static void forget_head(void) {
    s_model.loading = 0;
    s_model.ready = 0;
    s_model.loaded = 0;
    s_model.size = 0;
}

void fs_messages_reset(void) {
    forget_head();
    s_model.steps = 0;
    s_model.head.weight = s_weights;
    s_model.head.scratch = s_scratch;
}

uint32_t fs_messages_steps(void) {
    return s_model.steps;
}

/* ---- LOAD_WEIGHTS ---- */

static int load_checks(const fs_header *h, const uint8_t *p, fs_reply *r) {
    const uint16_t outputs = fs_get_u16(p), features = fs_get_u16(p + 2);
    const uint32_t offset = fs_get_u32(p + 12), count = (h->length - FS_LOAD_HEADER) / 4u;
    const uint32_t size = fs_head_size(outputs, features);
    const uint32_t finite = first_non_finite(p + FS_LOAD_HEADER, count);
    if (p[4] > FS_LOSS_MSE) {
        fs_reply_fail(r, FS_BAD_REQUEST, "loss code ", p[4], ": 0 is softmax, 1 is mse");
    } else if (outputs == 0 || features == 0) {
        fs_reply_error(r, FS_BAD_REQUEST, "outputs and features must be at least 1");
    } else if (!isfinite(fs_get_f32(p + 8))) {
        fs_reply_error(r, FS_BAD_REQUEST, "lr is not a finite number");
    } else if (features > FS_MAX_FEATURES) {
        fs_reply_fail(r, FS_TOO_LARGE, "features ", features, " > max_features (HELLO)");
    } else if (outputs > FS_MAX_OUTPUTS) {
        fs_reply_fail(r, FS_TOO_LARGE, "outputs ", outputs, " > max_outputs (HELLO)");
    } else if (size > FS_MAX_FLOATS) {
        fs_reply_fail(r, FS_TOO_LARGE, "head of ", size, " floats > max_floats (HELLO)");
    } else if (2u + 4u * features + (p[4] == FS_LOSS_SOFTMAX ? 4u : 4u * outputs) >
               FS_MAX_PAYLOAD) {
        fs_reply_error(r, FS_TOO_LARGE, "one sample would not fit a frame (max_payload, HELLO)");
    } else if (offset != 0 && !s_model.loading) {
        fs_reply_fail(r, FS_BAD_REQUEST, "offset ", offset, " but no load under way: start at 0");
    } else if (offset != 0 && (outputs != s_model.head.outputs ||
                               features != s_model.head.features || p[4] != s_model.head.loss ||
                               fs_get_u32(p + 8) != s_model.lr_bits)) {
        fs_reply_error(r, FS_BAD_REQUEST, "chunk configuration differs from the one at offset 0");
    } else if (offset != 0 && offset != s_model.loaded) {
        fs_reply_fail(r, FS_BAD_REQUEST, "offset ", offset, " is not where the last chunk ended");
    } else if (offset + count > size) {
        fs_reply_fail(r, FS_BAD_REQUEST, "values end at ", offset + count, ", past the head's end");
    } else if (!(h->flags & FS_FLAG_MORE) && offset + count < size) {
        fs_reply_fail(r, FS_BAD_REQUEST, "last chunk (no more flag) ends at ", offset + count,
                  ", before the head's end");
    } else if (finite < count) {
        fs_reply_fail(r, FS_NOT_FINITE, "weight ", offset + finite, " is not a finite number");
    } else {
        return 1;
    }
    return 0;
}

static void handle_load(const fs_header *h, const uint8_t *p, fs_reply *r) {
    uint32_t offset, count, i;
    if (h->length < FS_LOAD_HEADER || (h->length - FS_LOAD_HEADER) % 4u != 0) {
        fs_reply_fail(r, FS_BAD_REQUEST, "LOAD_WEIGHTS payload of ", h->length,
                  " bytes: need 16 + 4 per value");
        return;
    }
    if (!load_checks(h, p, r)) {
        return; /* a rejected chunk changes nothing */
    }
    offset = fs_get_u32(p + 12);
    count = (h->length - FS_LOAD_HEADER) / 4u;
    if (offset == 0) { /* a new head: the old one is gone */
        forget_head();
        s_model.loading = 1;
        s_model.head.outputs = fs_get_u16(p);
        s_model.head.features = fs_get_u16(p + 2);
        s_model.head.loss = p[4];
        s_model.head.lr = fs_get_f32(p + 8);
        s_model.lr_bits = fs_get_u32(p + 8);
        s_model.size = fs_head_size(s_model.head.outputs, s_model.head.features);
    }
    for (i = 0; i < count; i++) {
        s_weights[offset + i] = fs_get_f32(p + FS_LOAD_HEADER + 4u * i);
    }
    s_model.loaded = offset + count;
    if (s_model.loaded == s_model.size) {
        s_model.loading = 0;
        s_model.ready = 1;
    }
}

/* ---- TRAIN and EVAL ---- */

static uint32_t sample_bytes(void) {
    const fs_head *hd = &s_model.head;
    return 4u * hd->features + (hd->loss == FS_LOSS_SOFTMAX ? 4u : 4u * hd->outputs);
}

/* Decodes sample k into s_x and the label or s_y. */
static uint32_t read_sample(const uint8_t *samples, uint32_t k) {
    const fs_head *hd = &s_model.head;
    const uint8_t *s = samples + k * sample_bytes();
    uint16_t j;
    for (j = 0; j < hd->features; j++) {
        s_x[j] = fs_get_f32(s + 4u * j);
    }
    s += 4u * hd->features;
    if (hd->loss == FS_LOSS_SOFTMAX) {
        return fs_get_u32(s);
    }
    for (j = 0; j < hd->outputs; j++) {
        s_y[j] = fs_get_f32(s + 4u * j);
    }
    return 0;
}

/* Every feature (and mse target) of count samples is finite; else a NOT_FINITE reply. Checked
 * before any step, so a refused request leaves the head as it was. */
static int samples_finite(const uint8_t *samples, uint32_t count, fs_reply *r) {
    const fs_head *hd = &s_model.head;
    uint32_t k;
    for (k = 0; k < count; k++) {
        const uint8_t *s = samples + k * sample_bytes(); /* features, then label or targets */
        if (first_non_finite(s, hd->features) < hd->features ||
            (hd->loss == FS_LOSS_MSE &&
             first_non_finite(s + 4u * hd->features, hd->outputs) < hd->outputs)) {
            fs_reply_fail(r, FS_NOT_FINITE, "sample ", k, " has a number that is not finite");
            return 0;
        }
    }
    return 1;
}

/* A head, a payload of 2 + count * sample bytes and labels in range; else an error reply.
 * `what` names the request in the reason. */
static int samples_check(const fs_header *h, const uint8_t *p, fs_reply *r, uint16_t *count,
                         const char *what) {
    uint32_t expected, k, label;
    if (!s_model.ready) {
        fs_reply_error(r, FS_NO_MODEL, "no head loaded (reset?): send LOAD_WEIGHTS first");
        return 0;
    }
    if (h->length < 2) {
        fs_reply_error(r, FS_BAD_REQUEST, what);
        fs_reply_text(r, " payload has no u16 count");
        return 0;
    }
    *count = fs_get_u16(p);
    expected = 2u + *count * sample_bytes();
    if (*count == 0 && h->length == 2) {
        return 1; /* sensor data: the caller decides */
    }
    if (h->length != expected) {
        fs_reply_error(r, FS_BAD_REQUEST, what);
        fs_reply_text(r, " payload of ");
        fs_reply_uint(r, h->length);
        fs_reply_text(r, " bytes; count and head need ");
        fs_reply_uint(r, expected);
        return 0;
    }
    for (k = 0; k < *count && s_model.head.loss == FS_LOSS_SOFTMAX; k++) {
        label = fs_get_u32(p + 2 + (k + 1u) * sample_bytes() - 4u); /* the sample's last field */
        if (label >= s_model.head.outputs) {
            fs_reply_fail(r, FS_BAD_REQUEST, "label ", label, " in sample ");
            fs_reply_uint(r, k);
            fs_reply_text(r, " is not below the head's outputs, ");
            fs_reply_uint(r, s_model.head.outputs);
            return 0;
        }
    }
    return samples_finite(p + 2, *count, r);
}

/* Up to FS_SENSOR_MAX_STEPS samples from the port's sensor; returns the steps taken. */
static uint16_t train_from_sensor(float *loss_sum) {
    const fs_head *hd = &s_model.head;
    uint16_t steps = 0, tries;
    uint32_t label;
    for (tries = 0; tries < FS_SENSOR_MAX_STEPS; tries++) {
        label = 0;
        if (!fs_port_sensor_sample(s_x, hd->features, hd->loss, &label, s_y, hd->outputs)) {
            break;
        }
        if (hd->loss == FS_LOSS_SOFTMAX && label >= hd->outputs) {
            continue; /* a sample the head cannot learn: skipped */
        }
        *loss_sum += fs_head_step(hd, s_x, label, s_y);
        steps++;
    }
    return steps;
}

static uint32_t elapsed(uint32_t start, uint32_t end, int measured) {
    uint32_t d = end - start;
    if (!measured) {
        return FS_NOT_MEASURED;
    }
    return d == FS_NOT_MEASURED ? d - 1u : d;
}

static void handle_train(const fs_header *h, const uint8_t *p, fs_reply *r) {
    const fs_board *b = fs_port_board();
    uint32_t t0, e0, k, label;
    uint16_t count = 0, steps = 0;
    float loss_sum = 0.0f;
    if (!samples_check(h, p, r, &count, "TRAIN")) {
        return;
    }
    if (count == 0 && !(b->caps & FS_CAP_SENSOR)) {
        fs_reply_error(r, FS_BAD_REQUEST, "count 0 asks for sensor data; this device has none");
        return;
    }
    t0 = fs_port_time_us();
    e0 = fs_port_energy_uj();
    if (count == 0) {
        steps = train_from_sensor(&loss_sum);
    }
    for (k = 0; k < count; k++, steps++) {
        label = read_sample(p + 2, k);
        loss_sum += fs_head_step(&s_model.head, s_x, label, s_y);
    }
    if (!isfinite(loss_sum) || first_non_finite_weight() < s_model.size) {
        forget_head(); /* its weights cannot be trusted: NO_MODEL until the next load */
        fs_reply_error(r, FS_NOT_FINITE, FS_DIVERGED);
        return;
    }
    s_model.steps += steps;
    fs_put_u16(r->payload, steps);
    fs_put_u16(r->payload + 2, 0);
    fs_put_f32(r->payload + 4, loss_sum);
    fs_put_u32(r->payload + 8, elapsed(t0, fs_port_time_us(), b->caps & FS_CAP_TIME));
    fs_put_u32(r->payload + 12, elapsed(e0, fs_port_energy_uj(), b->caps & FS_CAP_ENERGY));
    r->length = 16;
}

static void handle_eval(const fs_header *h, const uint8_t *p, fs_reply *r) {
    uint16_t count = 0, correct = 0;
    uint32_t k, label;
    float loss_sum = 0.0f;
    int hit;
    if (!samples_check(h, p, r, &count, "EVAL")) {
        return;
    }
    if (count == 0) {
        fs_reply_error(r, FS_BAD_REQUEST, "EVAL needs at least one sample");
        return;
    }
    for (k = 0; k < count; k++) {
        label = read_sample(p + 2, k);
        loss_sum += fs_head_score(&s_model.head, s_x, label, s_y, &hit);
        correct = (uint16_t)(correct + hit);
    }
    if (!isfinite(loss_sum)) {
        fs_reply_error(r, FS_NOT_FINITE, "EVAL loss sum is not finite (inputs too large?)");
        return;
    }
    fs_put_u16(r->payload, count);
    fs_put_u16(r->payload + 2, correct);
    fs_put_f32(r->payload + 4, loss_sum);
    r->length = 8;
}

/* ---- GET_WEIGHTS, RESET, dispatch ---- */

static void handle_get(const fs_header *h, const uint8_t *p, fs_reply *r) {
    uint32_t offset, count, i;
    if (!s_model.ready) {
        fs_reply_error(r, FS_NO_MODEL, "no head loaded (reset?): send LOAD_WEIGHTS first");
        return;
    }
    if (h->length != 4) {
        fs_reply_fail(r, FS_BAD_REQUEST, "GET_WEIGHTS payload of ", h->length, " bytes, expected 4");
        return;
    }
    offset = fs_get_u32(p);
    if (offset >= s_model.size) {
        fs_reply_fail(r, FS_BAD_REQUEST, "offset ", offset, " >= the head's size ");
        fs_reply_uint(r, s_model.size);
        return;
    }
    count = s_model.size - offset;
    if (count > FS_GET_MAX_FLOATS) {
        count = FS_GET_MAX_FLOATS;
        r->flags = FS_FLAG_MORE;
    }
    fs_put_u32(r->payload, offset);
    for (i = 0; i < count; i++) {
        fs_put_f32(r->payload + 4u + 4u * i, s_weights[offset + i]);
    }
    r->length = (uint16_t)(4u + 4u * count);
}

void fs_messages_handle(const fs_header *h, const uint8_t *payload, fs_reply *r) {
    switch (h->type) {
    case FS_HELLO: fs_hello_handle(h, r); break;
    case FS_LOAD_WEIGHTS: handle_load(h, payload, r); break;
    case FS_TRAIN: handle_train(h, payload, r); break;
    case FS_GET_WEIGHTS: handle_get(h, payload, r); break;
    case FS_EVAL: handle_eval(h, payload, r); break;
    case FS_RESET:
        if (h->length != 0) {
            fs_reply_fail(r, FS_BAD_REQUEST, "RESET takes no payload, got ", h->length, " bytes");
        } else {
            forget_head();
        }
        break;
    default:
        fs_reply_fail(r, FS_BAD_REQUEST, "message type ", h->type, " is not a request");
        break;
    }
}
