/* Fuzz targets: each tests/fuzz/fuzz_<target>.c defines LLVMFuzzerTestOneInput.
 * Built two ways (cmake/fuzz.cmake): with -DRC_FUZZ=ON and clang, linked with
 * libFuzzer (`-fsanitize=fuzzer`); always, linked with replay.c into a plain
 * runner that replays tests/fuzz/corpus/<target>/ under ctest. A target
 * aborts (FUZZ_CHECK) on a broken property, not only on memory errors. */
#ifndef RC_FUZZ_H
#define RC_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(c)                                                                              \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #c);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* An anonymous in-memory file holding data[0..size), reachable by path
 * (/proc/self/fd/N) for loaders that open a path. Writes the path into
 * path[cap]; returns the fd to close, or -1. */
int fuzz_memfile(const uint8_t *data, size_t size, char *path, size_t cap);

/* An offline engine (no loop) with config c, seeded with 3,000 generated
 * clicks (50 users, 300 items, 3 cities, 4 categories) so that recall,
 * similar and user do real work. Aborts naming who when it cannot start. */
struct rc_config;
struct rc_engine;
struct rc_engine *fuzz_seeded_engine(const struct rc_config *c, const char *who);
/* The daemon's defaults scaled down for a seeded engine: dim 16, 4,096 items,
 * 1,024 users, k at most 200. */
void fuzz_seeded_config(struct rc_config *c);
/* The request handler on such an engine, as the daemon runs it once the model
 * is ready and partitions are assigned: api initialised, api->engine set. */
struct rc_api;
void fuzz_seeded_api(struct rc_api *api, const struct rc_config *c, const char *who);

#endif
