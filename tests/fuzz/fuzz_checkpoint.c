/* Fuzz target: the checkpoint loader (rc_checkpoint_load). Each input is tried
 * as is, and with its CRC-32C fields recomputed from the layout its header
 * implies (header, section A, input and output vectors, and in version 2 the
 * state section), so that the parser behind the checksums is reached. Properties: never a crash;
 * success only with a table of the header's dimension and rows, a NUL-terminated topic and
 * non-negative offsets; a refusal leaves no table and says why. */
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "recalld/checkpoint.h"
#include "recalld/model.h"
#include "recalld/table.h"

#define HEADER 64

static void put_crc(uint8_t *b, size_t from, size_t to)
{
    uint32_t crc = rc_crc32c(0, b + from, to - from);
    memcpy(b + to, &crc, 4);
}

/* Recomputes the checksums in place; leaves b alone when the header's sizes
 * do not fit the file. Version 2 ends with the state section and its
 * trailer (u64 length, CRC of both): the sections before it end there. */
static void fix_crcs(uint8_t *b, size_t size)
{
    uint32_t dim, version;
    uint64_t rows;
    if (size < HEADER + 12)
        return;
    put_crc(b, 0, 60);
    memcpy(&version, b + 8, 4);
    if (version >= 2) {
        uint64_t aux;
        memcpy(&aux, b + size - 12, 8);
        if (aux > size - HEADER - 12)
            return;
        put_crc(b, size - 12 - (size_t)aux, size - 4);
        size -= (size_t)aux + 12;
    }
    memcpy(&dim, b + 12, 4);
    memcpy(&rows, b + 32, 8);
    if (dim > 1024 || rows > (1u << 20))
        return;
    uint64_t vb = rows * dim * 4, tail = 2 * (vb + 4);
    if (size < HEADER + 4 + tail)
        return;
    size_t a_end = size - (size_t)tail - 4;
    put_crc(b, HEADER, a_end);
    put_crc(b, a_end + 4, a_end + 4 + (size_t)vb);
    put_crc(b, a_end + 8 + (size_t)vb, size - 4);
}

static void load(const uint8_t *data, size_t size, uint32_t dim)
{
    char path[64], err[256] = "";
    rc_table *t = NULL;
    rc_checkpoint_meta m;
    rc_table_opts o = {.dim = dim, .max_items = 4096};
    int fd = fuzz_memfile(data, size, path, sizeof path);
    FUZZ_CHECK(fd >= 0);
    int rc = rc_checkpoint_load(path, &o, &t, &m, err, sizeof err);
    close(fd);
    if (rc != 0) {
        FUZZ_CHECK(t == NULL && err[0] != '\0' && m.offsets == NULL);
        return;
    }
    uint32_t file_dim;
    uint64_t rows;
    memcpy(&file_dim, data + 12, 4);
    memcpy(&rows, data + 32, 8);
    FUZZ_CHECK(t != NULL && rc_table_dim(t) == file_dim && rc_table_size(t) == rows);
    FUZZ_CHECK(memchr(m.topic, '\0', sizeof m.topic) != NULL);
    FUZZ_CHECK(m.ncounters <= RC_CHECKPOINT_MAX_COUNTERS);
    for (uint32_t i = 0; i < m.noffsets; i++)
        FUZZ_CHECK(m.offsets[i].partition >= 0 && m.offsets[i].next >= 0);
    rc_checkpoint_meta_free(&m);
    rc_table_destroy(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1 << 20))
        return 0;
    load(data, size, 0);
    uint8_t *fixed = malloc(size ? size : 1);
    FUZZ_CHECK(fixed != NULL);
    memcpy(fixed, data, size);
    fix_crcs(fixed, size);
    load(fixed, size, 0);
    load(fixed, size, 16);
    free(fixed);
    return 0;
}
