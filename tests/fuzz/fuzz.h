/*
 * fuzz.h - shared bits of the fuzz targets (tests/fuzz/fuzz_*.c).
 *
 * Each target defines int LLVMFuzzerTestOneInput(const uint8_t *, size_t),
 * never returns anything but 0, and checks the invariants the headers
 * promise with FUZZ_CHECK: a broken one aborts with the file and line, which
 * libFuzzer (TA_FUZZ=ON) records as a crash and the replay main
 * (replay_main.c) turns into a failed ctest case.
 */
#ifndef TA_FUZZ_H
#define TA_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz invariant broken: %s\n", __FILE__, __LINE__, #cond);      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
