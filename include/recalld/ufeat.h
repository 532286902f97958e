/* ufeat — user profile features of an offline click log, for the two-tower
 * model (tower.h): per log user a device and a bag of interest tags, kept as
 * 64-bit hashes (rc_tower_hash of the strings; 0 = absent).
 *
 * Sources:
 *  - the log's own JSON events (`device`, `tags`): the user's LAST event with
 *    a non-empty device gives the device, the last with a non-empty tag list
 *    gives the tags (rc_clicklog keeps them while loading);
 *  - a --user-features file (rc_ufeat_load_file): CSV/TSV with a header row,
 *    first column the user id, every other column a categorical feature. A
 *    column named "device" (any case) fills the device; every other value
 *    becomes a tag "column=value" (hashed); a value with '|' is several tags;
 *    a column whose non-empty values are all numbers is bucketed (quantile
 *    buckets over the file's values, "column=q3") instead. A user listed in
 *    the file gets the file's features (replacing the log's); users of the
 *    file absent from the log are counted and ignored.
 *
 * Thread model: built by one thread, then read-only. */
#ifndef RECALLD_UFEAT_H
#define RECALLD_UFEAT_H
#include <stddef.h>
#include <stdint.h>

typedef struct rc_ufeat {
    uint32_t nusers;   /* rc_dict_size(log->users) */
    uint64_t *device;  /* per user, 0 = absent */
    uint32_t *tag_off; /* nusers + 1 offsets into tags */
    uint64_t *tags;
    uint64_t users_with_device, users_with_tags; /* counts, for reports */
} rc_ufeat;

struct rc_clicklog;
/* The features the log's events carried (empty store when none: every user
 * absent). *out: caller frees with rc_ufeat_free. Returns 0 or RC_ENOMEM. */
int rc_ufeat_from_log(const struct rc_clicklog *log, rc_ufeat **out);
/* Merges the file's features into f (see above). *unknown_users (NULL ok)
 * gets the file's users that the log does not have. Returns 0, RC_ENOENT /
 * RC_EIO (file), RC_EINVAL (no header, no user column, ragged row: errbuf
 * names the line), RC_ENOMEM. */
int rc_ufeat_load_file(rc_ufeat *f, const struct rc_clicklog *log, const char *path,
                       uint64_t *unknown_users, char *errbuf, size_t errlen);
void rc_ufeat_free(rc_ufeat *f); /* NULL-safe */
#endif
