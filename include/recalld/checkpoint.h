/* checkpoint — durable snapshots of the model: the item table (ids, city and
 * category names, per-row city/category/count = the samplers' counts, input
 * and output vectors), the counters that define the restore point
 * (events.applied and friends) and the consumed Kafka offsets per partition
 * (the next offset after the last message the model contains).
 *
 * The index is not stored: it is rebuilt from the vectors on restore (adding
 * rows to flat partitions is a copy; IVF partitions are retrained in the
 * background as at run time). The engine's sessions and co-occurrence counts
 * go in the state section (rc_checkpoint_swap_aux; src/engine_state.c), taken
 * at the same boundary.
 *
 * Taking and writing are split so that the model's single writer pauses only
 * for copies: rc_checkpoint_take (on the table's writer thread, at a batch
 * boundary) copies counts and vectors into buffers reused between checkpoints
 * and records how many rows, cities and categories exist; ids and names of
 * those rows never change, so the writer reads them from the live table.
 * rc_checkpoint_write (any thread but the loop's: it blocks on disk) writes
 * DIR/.checkpoint-SEQ.tmp, fsyncs it, renames it to DIR/checkpoint-SEQ.rcc,
 * fsyncs DIR, then deletes all but the newest `keep` checkpoints. A failure
 * (disk full, EFBIG, unwritable DIR) unlinks the temp file and leaves every
 * earlier checkpoint in place.
 *
 * File format, little-endian, version 2 (version 1: the same without the
 * state section and its trailer, still read):
 *   header (64 bytes): magic "RCCKPT01", u32 version, u32 dim, u64 seq,
 *     i64 created_ms, u64 rows, u32 ncities, u32 ncates, u32 ncounters,
 *     u32 noffsets, u32 topic_len, u32 CRC-32C of the 60 header bytes before it
 *     (a header that passes it is trusted: a dimension mismatch is then a
 *     configuration error, not corruption)
 *   topic bytes
 *   counters: ncounters x (u16 len, name, u64 value)
 *   offsets:  noffsets x (i32 partition, i64 next offset)
 *   cities, categories: n x (u16 len, bytes), in id order
 *   rows: rows x (u16 id len, id, u32 city, u32 cate, u32 count), in row order
 *   u32 CRC-32C of section A (topic to rows)
 *   input vectors: rows x dim f32, u32 CRC-32C; output vectors: the same
 *   state section: aux_len bytes (rc_checkpoint_swap_aux; the engine's
 *     sessions and co-occurrence counts), then u64 aux_len, u32 CRC-32C of
 *     both (the trailer, read first, finds the sections before it).
 * A file whose size, magic, version, structure or CRC is wrong is refused as
 * RC_ECORRUPT; restore then falls back to the next older one. */
#ifndef RECALLD_CHECKPOINT_H
#define RECALLD_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/table.h"

#define RC_CHECKPOINT_MAX_COUNTERS 64
#define RC_CHECKPOINT_NAME_MAX     31
#define RC_CHECKPOINT_TOPIC_MAX    255

typedef struct rc_checkpoint rc_checkpoint;

typedef struct rc_checkpoint_counter {
    char name[RC_CHECKPOINT_NAME_MAX + 1];
    uint64_t value;
} rc_checkpoint_counter;

typedef struct rc_checkpoint_offset {
    int32_t partition;
    int64_t next; /* offset of the last message the model contains + 1 */
} rc_checkpoint_offset;

/* Everything but the table. Plain struct: zero-initialise; `offsets` is
 * malloc'd by whoever fills it (rc_checkpoint_meta_free releases it). */
typedef struct rc_checkpoint_meta {
    uint64_t seq;       /* sequence number (file name); set by write, read by load */
    int64_t created_ms; /* wall clock when the snapshot was taken */
    char topic[RC_CHECKPOINT_TOPIC_MAX + 1];
    uint32_t ncounters;
    rc_checkpoint_counter counters[RC_CHECKPOINT_MAX_COUNTERS];
    uint32_t noffsets;
    rc_checkpoint_offset *offsets;
    /* load only: the state section (version 2; NULL, 0 when it is empty or the
     * file is version 1), malloc'd; what a take writes is set with
     * rc_checkpoint_swap_aux instead */
    unsigned char *aux;
    uint64_t aux_len;
} rc_checkpoint_meta;

/* Frees m->offsets and m->aux and zeroes their counts. NULL-safe. */
void rc_checkpoint_meta_free(rc_checkpoint_meta *m);
/* Value of counter `name`, or def when absent. */
uint64_t rc_checkpoint_meta_counter(const rc_checkpoint_meta *m, const char *name, uint64_t def);
/* Appends a counter (names longer than RC_CHECKPOINT_NAME_MAX are cut).
 * Returns 0 or RC_E2BIG when RC_CHECKPOINT_MAX_COUNTERS are set. */
int rc_checkpoint_meta_set(rc_checkpoint_meta *m, const char *name, uint64_t value);

/* ---- taking and writing ---- */

int rc_checkpoint_create(rc_checkpoint **out, char *errbuf, size_t errlen);
void rc_checkpoint_destroy(rc_checkpoint *c); /* NULL-safe */

/* Any thread, while no take/write runs on c: allocates and touches room for
 * `rows` rows of `dim` floats so that take() copies into resident memory
 * instead of faulting pages in during the writer's pause. Returns 0 or
 * RC_ENOMEM. Buffers only grow, until rc_checkpoint_release. */
int rc_checkpoint_reserve(rc_checkpoint *c, uint32_t rows, uint32_t dim);

/* While no take/write runs on c: frees the row buffers (counts, both vectors:
 * about 8 x dim + 4 bytes a row), so that a daemon does not hold a second copy
 * of the table between checkpoints. The meta of the last take stays readable;
 * write refuses (RC_EINVAL) until the next take. NULL-safe. */
void rc_checkpoint_release(rc_checkpoint *c);

/* Any thread: bytes c holds now (row buffers and the 1 MiB staging buffer). */
size_t rc_checkpoint_bytes(const rc_checkpoint *c);

/* The table's writer thread, at a point where table, counters and offsets
 * agree: copies counts and both vectors of every row of t (growing the buffers
 * if reserve was too small), the sizes of the name dictionaries, and meta
 * (counters, offsets, topic; seq is ignored). t is borrowed until the next
 * write returns: ids and names of the copied rows are read from it then.
 * Returns 0 or RC_ENOMEM (c unchanged). */
int rc_checkpoint_take(rc_checkpoint *c, const rc_table *t, const rc_checkpoint_meta *meta);

/* Like take, without copying any row: the next write reads counts and
 * vectors from t itself, so t must not change from this call until that
 * write's rows_done callback (no second copy of the table in memory; the
 * table's writer waits instead). Returns 0, RC_EINVAL or RC_ENOMEM. */
int rc_checkpoint_take_live(rc_checkpoint *c, const rc_table *t, const rc_checkpoint_meta *meta);

/* After a take, before its write: the state section that write stores (the
 * owner's state beside the table, e.g. sessions; opaque here) becomes the
 * contents of b, and b gets c's former buffer, emptied, to fill next time (no
 * copy). A take empties the section, so a write without a swap stores none.
 * Counted in rc_checkpoint_bytes; freed by rc_checkpoint_release. */
struct rc_buf;
void rc_checkpoint_swap_aux(rc_checkpoint *c, struct rc_buf *b);

/* The meta of the last take (NULL before any): offsets point into c. */
const rc_checkpoint_meta *rc_checkpoint_meta_of(const rc_checkpoint *c);

typedef struct rc_checkpoint_write_opts {
    const char *dir; /* existing directory */
    uint32_t keep;   /* checkpoints kept after a success, 0 = 2 */
    double max_mb_s; /* write bandwidth cap in MB/s (1e6 bytes), 0 = none */
    /* NULL ok: called once by every write, on its thread, as soon as it no
     * longer reads the taken rows (before the fsync), whatever the outcome. */
    void (*rows_done)(void *ud);
    void *ud;
} rc_checkpoint_write_opts;

typedef struct rc_checkpoint_info {
    uint64_t seq;      /* number given to the file */
    uint64_t bytes;    /* file size */
    uint64_t write_ns; /* open .. directory fsync */
    uint32_t rows;
    char path[4096]; /* final path */
} rc_checkpoint_info;

/* Blocking; never on the loop thread. Writes what the last take copied as
 * checkpoint seq = 1 + the largest seq found in dir. info (NULL ok) describes
 * the new file. Returns 0, RC_EINVAL (nothing taken, bad opts), RC_EIO with
 * "checkpoint PATH: what: strerror" (no space, EFBIG, permissions...). */
int rc_checkpoint_write(rc_checkpoint *c, const rc_checkpoint_write_opts *o,
                        rc_checkpoint_info *info, char *errbuf, size_t errlen);

/* ---- reading ---- */

/* Reads a checkpoint file into a new table built with *opts (opts->dim must be
 * 0 or equal the file's) and meta (caller frees with rc_checkpoint_meta_free).
 * Vectors are read straight into the table's rows. Returns 0, RC_ENOENT,
 * RC_EIO, RC_ECORRUPT (truncated, foreign, checksum), RC_EINVAL (dimension or
 * max_items do not fit the configuration), RC_ENOMEM. */
int rc_checkpoint_load(const char *path, const rc_table_opts *opts, rc_table **table,
                       rc_checkpoint_meta *meta, char *errbuf, size_t errlen);

/* Restores the newest valid checkpoint under dir: removes leftover temp files,
 * tries checkpoints newest first, renames a corrupt one to NAME.corrupt (kept
 * for inspection, logged as a warning) and goes on with the next older one.
 * path (NULL ok, pathlen bytes) receives the file used. Returns 0, RC_ENOENT
 * (no valid checkpoint), RC_EINVAL (a checkpoint that does not fit the
 * configuration: refusing beats silently starting from an older state),
 * RC_EIO (dir unreadable), RC_ENOMEM. */
int rc_checkpoint_restore(const char *dir, const rc_table_opts *opts, rc_table **table,
                          rc_checkpoint_meta *meta, char *path, size_t pathlen, char *errbuf,
                          size_t errlen);

/* Optional loader callback, to overlap work with the load: on_rows is called
 * on the loader's vector thread each time the input vectors of rows
 * [first, first + n) have been read into t (rows below rc_table_size(t);
 * their city/category are set; the section's CRC is checked only at its end:
 * if the load then fails, t is destroyed and whatever was built from it must
 * be dropped). Calls come in row order, for one t at a time; a restore that
 * falls back to an older file starts again with a new t. */
typedef struct rc_checkpoint_hooks {
    void (*on_rows)(void *ud, rc_table *t, uint32_t first, uint32_t n);
    void *ud;
} rc_checkpoint_hooks;

int rc_checkpoint_load_with(const char *path, const rc_table_opts *opts,
                            const rc_checkpoint_hooks *hooks, rc_table **table,
                            rc_checkpoint_meta *meta, char *errbuf, size_t errlen);
int rc_checkpoint_restore_with(const char *dir, const rc_table_opts *opts,
                               const rc_checkpoint_hooks *hooks, rc_table **table,
                               rc_checkpoint_meta *meta, char *path, size_t pathlen, char *errbuf,
                               size_t errlen);

/* Sequence numbers of the checkpoint files under dir (valid or not, temp and
 * corrupt files excluded), newest first, into seqs[0..cap). Returns how many
 * exist (may exceed cap) or RC_EIO. */
int rc_checkpoint_list(const char *dir, uint64_t *seqs, size_t cap);

/* Checkpoint files under dir that could not be restored: set aside as corrupt
 * (NAME.corrupt) or still there (unreadable). Call after a restore found none
 * valid: > 0 means the model once existed and was lost. Returns the count or
 * RC_EIO. */
int rc_checkpoint_count_invalid(const char *dir);

/* Takes an exclusive advisory lock on DIR/LOCK (created if needed) so that two
 * processes never share a data directory. Returns the fd to keep open (closing
 * it releases the lock; so does process death), or RC_EIO / RC_EAGAIN ("data
 * directory DIR is in use by another process"). */
int rc_checkpoint_lock_dir(const char *dir, char *errbuf, size_t errlen);

#endif
