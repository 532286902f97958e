/* Shared fixtures of the two-tower tests (test_tower_serve.c,
 * test_tower_retrain.c): a small random-weight model and a deterministic
 * click stream with devices and tags. */
#ifndef RC_TEST_TOWER_STREAM_H
#define RC_TEST_TOWER_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "e2e.h"
#include "recalld/tower.h"

#define T0      1700000000000LL
#define NITEMS  300u
#define NCITIES 3u

/* The small model configuration (d 16, H 32, 8 recent clicks, all features). */
rc_tower_config tower_small_cfg(uint32_t w2v_dim);
/* Writes a model of tower_small_cfg with random weights (seed) to path. */
void tower_write_model(const char *path, uint32_t w2v_dim, uint64_t seed);

/* Event line j of the stream: users u0..u(nusers-1), each browsing its own
 * city (u % 3), one click a minute, a 40-minute pause every 9 clicks (a new
 * session), a device on some events and tags on others; with empty_tag the
 * tag lists also carry an empty tag (which serving and training drop). ts is
 * per user increasing. ts_out / user_out may be NULL. Returns the length. */
int tower_event_line(char *buf, size_t cap, uint32_t j, uint32_t nusers, int empty_tag,
                     int64_t *ts_out, uint32_t *user_out);
/* Events [first, first + n) of the stream into d's topic, keyed by user (kcat). */
void tower_produce(const e2e_daemon *d, uint32_t first, uint32_t n, uint32_t nusers, int empty_tag);
/* A fresh directory "/tmp/<prefix>" + six random characters into dir. */
void tower_tmp_dir(char *dir, size_t cap, const char *prefix);

#endif
