/* modelpath — see include/recalld/modelpath.h. */
#include "recalld/modelpath.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "recalld/common.h"

/* Owner and mode as sshd's StrictModes wants them. NULL when fine, else why. */
static const char *strict_mode(const struct stat *st)
{
    if (st->st_uid != geteuid() && st->st_uid != 0)
        return "owned by another user";
    if (st->st_mode & 022)
        return "group- or world-writable";
    return NULL;
}

static const char *what(const rc_modelpath_opts *o) { return o->what ? o->what : "tower model"; }

static const char *dir_key(const rc_modelpath_opts *o)
{
    return o->dir_key ? o->dir_key : "tower.model_dir";
}

static const char *refusal(const rc_modelpath_opts *o)
{
    return o->refusal ? o->refusal : RC_MODELPATH_NOT_ALLOWED;
}

/* fd is open on what to load: a regular file, owned and moded strictly, at
 * most o->max_bytes. The name is only used in messages. */
static int check_file(const rc_modelpath_opts *o, int fd, const char *name, char *eb, size_t el)
{
    struct stat st;
    const char *why;
    if (fstat(fd, &st) != 0)
        return rc_err(eb, el, RC_EIO, "%s %s: %s", what(o), name, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return rc_err(eb, el, RC_EIO, "%s %s: not a regular file", what(o), name);
    if ((why = strict_mode(&st)))
        return rc_err(eb, el, RC_EIO, "%s %s: %s: refused", what(o), name, why);
    if (o->max_bytes && (uint64_t)st.st_size > o->max_bytes)
        return rc_err(eb, el, RC_E2BIG, "%s %s: %lld bytes: over %s (%llu)", what(o), name,
                      (long long)st.st_size, o->max_key ? o->max_key : "tower.max_model_bytes",
                      (unsigned long long)o->max_bytes);
    return 0;
}

/* The configured file: the operator chose it, so it may be a symbolic link
 * (a mounted ConfigMap is); still never a FIFO or device, owned strictly. */
static int check_configured(const rc_modelpath_opts *o, char *out, size_t cap, char *eb, size_t el)
{
    int fd = open(o->configured, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return rc_err(eb, el, RC_EIO, "%s %s: %s", what(o), o->configured, strerror(errno));
    int rc = check_file(o, fd, o->configured, eb, el);
    close(fd);
    if (rc == 0 && snprintf(out, cap, "%s", o->configured) >= (int)cap)
        rc = rc_err(eb, el, RC_EINVAL, "%s %s: path too long", what(o), o->configured);
    return rc;
}

/* Splits req into the resolved directory it names (dir when it has no '/')
 * and its last component. 0, or -1 when it names no file of dir. */
static int split(const char *dir_real, const char *req, char *base, size_t bcap)
{
    char d[PATH_MAX], real[PATH_MAX];
    const char *slash = strrchr(req, '/');
    const char *b = slash ? slash + 1 : req;
    if (!b[0] || strcmp(b, ".") == 0 || strcmp(b, "..") == 0 || strlen(b) >= bcap)
        return -1;
    snprintf(base, bcap, "%s", b);
    if (!slash)
        return 0;
    size_t n = (size_t)(slash - req);
    if (n >= sizeof d)
        return -1;
    memcpy(d, req, n);
    d[n] = '\0';
    if (!realpath(n ? d : "/", real))
        return -1;
    return strcmp(real, dir_real) == 0 ? 0 : -1;
}

static int check_in_dir(const rc_modelpath_opts *o, const char *req, char *out, size_t cap,
                        char *eb, size_t el)
{
    char dir[PATH_MAX], base[NAME_MAX + 1];
    struct stat st;
    const char *why;
    if (!realpath(o->dir, dir))
        return rc_err(eb, el, RC_EIO, "%s %s: %s", dir_key(o), o->dir, strerror(errno));
    if (split(dir, req, base, sizeof base) != 0)
        return rc_err(eb, el, RC_EINVAL, "%s", refusal(o));
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fstat(dfd, &st) != 0) {
        int e = errno;
        if (dfd >= 0)
            close(dfd);
        return rc_err(eb, el, RC_EIO, "%s %s: %s", dir_key(o), o->dir, strerror(e));
    }
    if ((why = strict_mode(&st))) {
        close(dfd);
        return rc_err(eb, el, RC_EIO, "%s %s: %s: refused", dir_key(o), o->dir, why);
    }
    int fd = openat(dfd, base, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    int e = errno;
    close(dfd);
    if (fd < 0)
        return rc_err(eb, el, RC_EIO, "%s %s: %s", what(o), base,
                      e == ELOOP ? "a symbolic link: refused" : strerror(e));
    int rc = check_file(o, fd, base, eb, el);
    close(fd);
    if (rc == 0 && snprintf(out, cap, "%s/%s", dir, base) >= (int)cap)
        rc = rc_err(eb, el, RC_EINVAL, "%s %s: path too long", what(o), base);
    return rc;
}

int rc_modelpath_check(const rc_modelpath_opts *o, const char *req, char *out, size_t cap,
                       char *errbuf, size_t errlen)
{
    if (!o || !out || !cap)
        return rc_err(errbuf, errlen, RC_EINVAL, "modelpath: invalid arguments");
    int have_conf = o->configured && o->configured[0];
    if (!req || !req[0] || (have_conf && strcmp(req, o->configured) == 0)) {
        if (!have_conf)
            return rc_err(errbuf, errlen, RC_ENOENT, "%s",
                          o->none ? o->none
                                  : "no model file (tower.model, --model "
                                    "FILE.tower or a \"path\" in tower.model_dir)");
        return check_configured(o, out, cap, errbuf, errlen);
    }
    if (!o->dir || !o->dir[0])
        return rc_err(errbuf, errlen, RC_EINVAL, "%s", refusal(o));
    return check_in_dir(o, req, out, cap, errbuf, errlen);
}
