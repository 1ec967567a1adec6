/* A test header, not a framework: FS_CHECK counts, reports and goes on; main returns
 * fs_test_report(), so the process fails when any check did. */
#ifndef FS_TEST_H
#define FS_TEST_H

#include <stdio.h>

static int fs_test_checks, fs_test_failures;

#define FS_CHECK(cond)                                                                      \
    do {                                                                                    \
        fs_test_checks++;                                                                   \
        if (!(cond)) {                                                                      \
            fs_test_failures++;                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);        \
        }                                                                                   \
    } while (0)

static int fs_test_report(const char *name) {
    printf("%s: %d checks, %d failed\n", name, fs_test_checks, fs_test_failures);
    return fs_test_failures == 0 ? 0 : 1;
}

#endif /* FS_TEST_H */
