/* fedsim firmware: compile-time options (override any of them with -DNAME=value).
 *
 * Every buffer in the core is a static array sized from these constants: no malloc, and the
 * memory a build needs is known at link time (see `make arduino-check` for the size report).
 */
#ifndef FS_CONFIG_H
#define FS_CONFIG_H

/* Largest payload the device accepts and sends (PROTOCOL.md: at most 2048). */
#ifndef FS_MAX_PAYLOAD
#define FS_MAX_PAYLOAD 2048u
#endif

/* Capacity of the weight buffer in floats: outputs * (features + 1) must fit (16 KiB). */
#ifndef FS_MAX_FLOATS
#define FS_MAX_FLOATS 4096u
#endif

/* Largest feature vector. A softmax TRAIN sample is 4 * features + 4 bytes after the u16 count,
 * so one frame carries at most (2048 - 2 - 4) / 4 = 510 features. */
#ifndef FS_MAX_FEATURES
#define FS_MAX_FEATURES 510u
#endif

/* Largest number of classes (softmax) or outputs (mse). */
#ifndef FS_MAX_OUTPUTS
#define FS_MAX_OUTPUTS 64u
#endif

/* Samples a TRAIN with count 0 takes from the port's sensor hook per request, at most. */
#ifndef FS_SENSOR_MAX_STEPS
#define FS_SENSOR_MAX_STEPS 64u
#endif

/* The firmware string in the HELLO reply. */
#ifndef FS_FIRMWARE_NAME
#define FS_FIRMWARE_NAME "fedsim-fw 0.1.0"
#endif

#if FS_MAX_PAYLOAD > 2048u || FS_MAX_PAYLOAD < 128u
#error "FS_MAX_PAYLOAD must be in [128, 2048] (PROTOCOL.md)"
#endif
#if FS_MAX_OUTPUTS < 1u || FS_MAX_FEATURES < 1u || FS_MAX_FLOATS < 2u
#error "FS_MAX_OUTPUTS, FS_MAX_FEATURES and FS_MAX_FLOATS must be positive"
#endif

#endif /* FS_CONFIG_H */
