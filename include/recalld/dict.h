/* dict — append-only string interning: byte string <-> dense id 0,1,2,...
 *
 * Used for item ids, cities, categories, devices and tags. One writer thread
 * interns; any thread may look up (rc_dict_find, rc_dict_str) concurrently.
 * Strings are copied; ids are never reused or removed. */
#ifndef RECALLD_DICT_H
#define RECALLD_DICT_H

#include <stddef.h>
#include <stdint.h>

typedef struct rc_dict rc_dict;

/* max_ids: hard bound (0 = 2^31). Returns 0 or RC_ENOMEM/RC_EINVAL. */
int rc_dict_create(uint32_t max_ids, rc_dict **out, char *errbuf, size_t errlen);
void rc_dict_destroy(rc_dict *d); /* NULL-safe */

/* Writer thread. Finds s or appends it. *id receives the id, *created 1 when new
 * (created may be NULL). Returns 0, RC_ENOMEM when max_ids is reached, RC_E2BIG
 * when len > 65535. */
int rc_dict_intern(rc_dict *d, const char *s, size_t len, uint32_t *id, int *created);

/* Any thread. Returns 0 and sets *id, or RC_ENOENT. While the writer interns,
 * the newest id may be counted by rc_dict_size a moment before it can be
 * found (the size is published first, so a found id's entry is readable at
 * once); every older id is always found. */
int rc_dict_find(const rc_dict *d, const char *s, size_t len, uint32_t *id);

/* Any thread; a cache hint, nothing else. A lookup of s is three dependent
 * memory reads (hash slot, entry, bytes); a caller that knows its keys ahead
 * calls this with step 0, later 1, later 2 (e.g. one event apart), each
 * step loading what the next one reads. Returns s's id from step 1 on when
 * its hash slot is found (a hash match: not checked against the bytes), else
 * UINT32_MAX. */
uint32_t rc_dict_prefetch(const rc_dict *d, const char *s, size_t len, int step);

/* Any thread. The string of id (NUL-terminated, stable for the dict's life);
 * *len may be NULL. Returns NULL for an unknown id. */
const char *rc_dict_str(const rc_dict *d, uint32_t id, size_t *len);

/* Number of ids (acquire load: every id below it is fully readable). */
uint32_t rc_dict_size(const rc_dict *d);

/* Approximate heap bytes used. */
size_t rc_dict_bytes(const rc_dict *d);

#endif
