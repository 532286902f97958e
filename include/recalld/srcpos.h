/* srcpos — where a repartitioned message came from, and a trainer's filter
 * of the repeats a repartitioner's restart writes (docs/DESIGN.md "Roles and
 * replicas").
 *
 * The repartitioner (repart.h) adds a header RC_SRCPOS_HEADER to every
 * message it forwards: the click-topic partition and offset it read it at
 * (12 bytes, big-endian int32 and int64). One repartitioner reads a click
 * partition in order and its idempotent producer keeps that order within a
 * by-city partition, so per (by-city partition, click partition) the source
 * offsets a trainer reads only grow - until a repartitioner that died is
 * replaced: its successor starts again at the last committed click offset,
 * and what it forwards up to the dead one's last is a repeat. The filter
 * keeps, per pair, the highest source offset seen and calls anything at or
 * below it a repeat. A forward queued again after a failed delivery carries
 * no header (it may come out of order): it is never filtered.
 *
 * Not thread-safe: the daemon uses it on the loop thread. */
#ifndef RECALLD_SRCPOS_H
#define RECALLD_SRCPOS_H

#include <stddef.h>
#include <stdint.h>

#define RC_SRCPOS_HEADER "rc-src"
#define RC_SRCPOS_LEN    12

void rc_srcpos_encode(unsigned char out[RC_SRCPOS_LEN], int32_t partition, int64_t offset);
/* 0 and the position, or -1 when v is not one (wrong length, negative). */
int rc_srcpos_decode(const void *v, size_t len, int32_t *partition, int64_t *offset);

typedef struct rc_srcpos_seen rc_srcpos_seen;

rc_srcpos_seen *rc_srcpos_seen_new(void); /* NULL: out of memory */
void rc_srcpos_seen_free(rc_srcpos_seen *s);

/* 1 when src_offset of src_partition was already seen in partition part (a
 * repeat); else records it and returns 0 (also when memory runs out: then
 * nothing is filtered). */
int rc_srcpos_seen_check(rc_srcpos_seen *s, int32_t part, int32_t src_partition,
                         int64_t src_offset);

/* Forgets what was seen in partition part (it was assigned or revoked: the
 * next reader starts from a committed offset with no history). */
void rc_srcpos_seen_forget(rc_srcpos_seen *s, int32_t part);

#endif
