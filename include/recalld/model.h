/* model — the model file: what recalld-train writes and `recalld --model FILE`
 * loads: dimension, item ids with city/category names, counts, input and output
 * vectors. Format (little-endian): magic "RCMODEL1", u32 version, u32 dim, u64
 * items, sections..., trailing CRC-32C of everything before it. Written to a
 * temp file, fsynced, renamed. A truncated, corrupt or foreign file is refused
 * with a clear error (RC_ECORRUPT: "model FILE: checksum mismatch"). */
#ifndef RECALLD_MODEL_H
#define RECALLD_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/table.h"

/* Writes every row of t. Thread: any, while no one writes t. */
int rc_model_save(const rc_table *t, const char *path, char *errbuf, size_t errlen);

/* Reads path into a new table (opts->dim must be 0 or equal the file's). On
 * success *out owns the table. Returns 0, RC_ENOENT, RC_EIO, RC_ECORRUPT, RC_EINVAL. */
int rc_model_load(const char *path, const rc_table_opts *opts, rc_table **out, char *errbuf,
                  size_t errlen);

/* CRC-32C (Castagnoli) of buf, continuing from crc (0 to start). */
uint32_t rc_crc32c(uint32_t crc, const void *buf, size_t n);

#endif
