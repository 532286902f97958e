/* Fuzz target: the model file loader (rc_model_load). Each input is tried
 * twice: as the whole file (the checksum must refuse nearly everything), and
 * as the contents with a correct CRC-32C appended, so that the parser behind
 * the checksum is reached. Properties: never a crash; success only with a
 * table whose rows all have an id, and a refusal always has a message. */
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "recalld/model.h"
#include "recalld/table.h"

static void load(const uint8_t *data, size_t size, uint32_t dim)
{
    char path[64], err[256] = "";
    rc_table *t = NULL;
    rc_table_opts o = {.dim = dim, .max_items = 4096};
    int fd = fuzz_memfile(data, size, path, sizeof path);
    FUZZ_CHECK(fd >= 0);
    int rc = rc_model_load(path, &o, &t, err, sizeof err);
    close(fd);
    if (rc != 0) {
        FUZZ_CHECK(t == NULL && err[0] != '\0');
        return;
    }
    FUZZ_CHECK(t != NULL);
    uint32_t file_dim; /* magic(8) version(4) dim(4) */
    memcpy(&file_dim, data + 12, 4);
    FUZZ_CHECK(rc_table_dim(t) == file_dim); /* the vectors read are the table's */
    for (uint32_t r = 0; r < rc_table_size(t); r++) {
        size_t len = 0;
        FUZZ_CHECK(rc_table_item_id(t, r, &len) != NULL && len > 0);
    }
    rc_table_destroy(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1 << 20))
        return 0;
    load(data, size, 0);
    uint8_t *fixed = malloc(size + 4);
    FUZZ_CHECK(fixed != NULL);
    memcpy(fixed, data, size);
    uint32_t crc = rc_crc32c(0, data, size);
    memcpy(fixed + size, &crc, 4);
    load(fixed, size + 4, 0);
    load(fixed, size + 4, 16);
    free(fixed);
    return 0;
}
