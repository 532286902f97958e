/* retrain — one retraining of the two-tower model (tower.h) from a snapshot
 * of the daemon's replay buffer (replay.h), run by the engine's background
 * retrain thread (engine.h, tower.retrain_*).
 *
 * The buffered clicks become an in-memory click log (clicklog.h) exactly as
 * recalld-train would have loaded them: users by their hash (16 hex digits),
 * items by their id in the word2vec table, the item's city and category as
 * the table holds them, sessions cut with the daemon's sessions.gap_ms. User
 * features (ufeat.h): per user the device of its newest buffered click that
 * had one and the tags of its newest buffered click that had them (the
 * offline rule over the buffer's window). Item inputs read the LIVE word2vec
 * table (rows below rc_table_size; a vector may be read mid-update, which
 * training inputs tolerate). Then rc_tower_history_create and rc_tower_train.
 *
 * Examples: every buffered click but the first of its session (all items have
 * a word2vec row). Fewer than min_examples: nothing is trained (skipped).
 *
 * Memory while it runs: the snapshot (40 bytes a click), about 100 bytes a
 * click more at the peak (log records and the sessionizing copy, history,
 * training order) and the new model with its Adam state (3 x params floats:
 * 55 MB at the default sizes). Cost: bench_retrain. */
#ifndef RECALLD_RETRAIN_H
#define RECALLD_RETRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "recalld/replay.h"
#include "recalld/table.h"
#include "recalld/tower.h"

typedef struct rc_retrain_opts {
    int64_t gap_ms;            /* session gap, 0 = 30 min (use sessions.gap_ms) */
    uint64_t min_examples;     /* fewer examples: skipped; 0 = 1 */
    rc_tower_train_opts train; /* cfg, epochs, threads, max_seconds, init, cancel, seed ... */
} rc_retrain_opts;

typedef struct rc_retrain_result {
    int skipped; /* too few examples: no model, errbuf says why */
    uint64_t clicks, users, items, sessions, examples;
    uint64_t users_with_device, users_with_tags;
    rc_tower_train_result train;
} rc_retrain_result;

/* Trains a model from snap over the word2vec table w2v (borrowed, live).
 * Returns 0 with *out the new model (caller frees), or 0 with *out NULL and
 * res->skipped (errbuf: "N examples in the replay buffer, fewer than
 * tower.retrain_min_examples = M"); RC_EAGAIN (cancelled), RC_EINVAL (bad
 * training option, init model of another shape: errbuf says which),
 * RC_ENOMEM. res may not be NULL. */
int rc_retrain_run(const rc_replay_snap *snap, const rc_table *w2v, const rc_retrain_opts *opts,
                   rc_tower_model **out, rc_retrain_result *res, char *errbuf, size_t errlen);

#endif
