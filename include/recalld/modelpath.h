/* modelpath — which model files a socket client may make recalld read.
 *
 * reload_model names a file; the daemon reads it with its own privileges, so
 * the name alone must not reach open(2). A request may name only the
 * configured tower.model or a file directly inside tower.model_dir (by bare
 * name or by a path whose directory resolves to it). The file is opened
 * without following a symbolic link and without blocking (a FIFO or device
 * cannot hang the loader), then checked with fstat like sshd's StrictModes:
 * a regular file, owned by this uid or root, not group- or world-writable,
 * at most max_bytes; the directory likewise owned and not writable by
 * others, so nobody else can swap the file between this check and the load.
 * Anything else gets one generic message ("not an allowed model"), so a
 * client learns nothing about files outside the directory.
 * Thread-safe (no state). */
#ifndef RECALLD_MODELPATH_H
#define RECALLD_MODELPATH_H

#include <stddef.h>
#include <stdint.h>

typedef struct rc_modelpath_opts {
    const char *dir;        /* tower.model_dir; NULL or "" = only configured (borrowed) */
    const char *configured; /* tower.model; NULL or "" = none (borrowed) */
    uint64_t max_bytes;     /* tower.max_model_bytes; 0 = no bound */
    /* The words of the messages, NULL = reload_model's: the file ("tower
     * model"), the keys of dir and max_bytes, the generic refusal
     * (RC_MODELPATH_NOT_ALLOWED) and the answer when nothing is named or
     * configured. install_model passes its own. */
    const char *what, *dir_key, *max_key, *refusal, *none;
} rc_modelpath_opts;

/* The generic refusal, also the whole message of RC_EPERM-like refusals. */
#define RC_MODELPATH_NOT_ALLOWED                                                                   \
    "not an allowed model (reload_model reads tower.model or a file in tower.model_dir)"
/* install_model's refusal. */
#define RC_INSTALL_NOT_ALLOWED                                                                     \
    "not an allowed model (install_model reads model.path or a file in model.dir)"

/* Checks the file a request names (req NULL or "" = the configured one) and
 * writes the path to load to out (cap bytes). Returns 0; RC_EINVAL with
 * RC_MODELPATH_NOT_ALLOWED (outside the allowed places); RC_ENOENT (no req
 * and no configured model); RC_EIO with the reason for a file inside them (not a regular
 * file, a symbolic link, owner or mode, missing); RC_E2BIG over max_bytes. */
int rc_modelpath_check(const rc_modelpath_opts *o, const char *req, char *out, size_t cap,
                       char *errbuf, size_t errlen);

#endif
