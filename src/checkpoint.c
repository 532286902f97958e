#include "recalld/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "recalld/buf.h"
#include "recalld/common.h"
#include "recalld/log.h"
#include "recalld/model.h"

#define MOD         "checkpoint"
#define MAGIC       "RCCKPT01"
#define VERSION     2u /* 1 still read: no state section */
#define HEADER      64u
#define STAGE       (1u << 20) /* staging buffer; also the throttling step */
#define NAME_FMT    "checkpoint-%020" PRIu64 ".rcc"
#define TMP_FMT     ".checkpoint-%020" PRIu64 ".tmp"
#define MAX_ATTRS   (1u << 24)
#define MAX_OFFSETS (1u << 20)
#define MAX_ROWS    (1u << 31)

struct rc_checkpoint {
    const rc_table *t; /* borrowed from take() until write() returns */
    int taken;
    uint32_t rows, dim, ncities, ncates;
    rc_checkpoint_meta meta;
    uint32_t off_cap;
    uint32_t *counts;
    float *in, *out;
    size_t cap_rows, cap_floats; /* room in counts / in / out */
    int released;                /* rows of the last take freed: nothing to write */
    int live;                    /* take_live: rows are read from t by the write */
    _Atomic size_t held;         /* bytes of counts, in, out, aux and stage (any thread) */
    unsigned char *stage;
    rc_buf aux; /* the state section of the next write (rc_checkpoint_swap_aux) */
};

/* ---- meta ---- */

void rc_checkpoint_meta_free(rc_checkpoint_meta *m)
{
    if (!m)
        return;
    free(m->offsets);
    m->offsets = NULL;
    m->noffsets = 0;
    free(m->aux);
    m->aux = NULL;
    m->aux_len = 0;
}

uint64_t rc_checkpoint_meta_counter(const rc_checkpoint_meta *m, const char *name, uint64_t def)
{
    for (uint32_t i = 0; m && i < m->ncounters; i++)
        if (strcmp(m->counters[i].name, name) == 0)
            return m->counters[i].value;
    return def;
}

int rc_checkpoint_meta_set(rc_checkpoint_meta *m, const char *name, uint64_t value)
{
    if (m->ncounters >= RC_CHECKPOINT_MAX_COUNTERS)
        return RC_E2BIG;
    rc_checkpoint_counter *c = &m->counters[m->ncounters++];
    size_t n = strnlen(name, RC_CHECKPOINT_NAME_MAX);
    memcpy(c->name, name, n);
    c->name[n] = '\0';
    c->value = value;
    return 0;
}

/* ---- snapshot ---- */

int rc_checkpoint_create(rc_checkpoint **out, char *eb, size_t el)
{
    if (!out)
        return rc_err(eb, el, RC_EINVAL, "checkpoint: out is NULL");
    *out = NULL;
    rc_checkpoint *c = calloc(1, sizeof *c);
    if (!c || !(c->stage = malloc(STAGE))) {
        free(c);
        return rc_err(eb, el, RC_ENOMEM, "checkpoint: out of memory");
    }
    atomic_init(&c->held, STAGE);
    rc_buf_init(&c->aux, 0);
    *out = c;
    return 0;
}

void rc_checkpoint_destroy(rc_checkpoint *c)
{
    if (!c)
        return;
    rc_checkpoint_meta_free(&c->meta);
    free(c->counts);
    free(c->in);
    free(c->out);
    free(c->stage);
    rc_buf_free(&c->aux);
    free(c);
}

static void held_update(rc_checkpoint *c)
{
    atomic_store_explicit(&c->held,
                          STAGE + c->cap_rows * sizeof *c->counts +
                              2 * c->cap_floats * sizeof(float) + c->aux.cap,
                          memory_order_relaxed);
}

/* Grows one buffer to n elements of size sz, touching the new pages so that
 * later copies do not fault. */
static int grow_touch(void **p, size_t old_n, size_t n, size_t sz)
{
    void *q = realloc(*p, n * sz);
    if (!q)
        return RC_ENOMEM;
    memset((char *)q + old_n * sz, 0, (n - old_n) * sz);
    *p = q;
    return 0;
}

static int ensure(rc_checkpoint *c, size_t rows, uint32_t dim)
{
    size_t floats = rows * dim;
    if (rows > c->cap_rows) {
        if (grow_touch((void **)&c->counts, c->cap_rows, rows, sizeof *c->counts))
            return RC_ENOMEM;
        c->cap_rows = rows;
    }
    if (floats > c->cap_floats) {
        if (grow_touch((void **)&c->in, c->cap_floats, floats, sizeof(float)) ||
            grow_touch((void **)&c->out, c->cap_floats, floats, sizeof(float)))
            return RC_ENOMEM;
        c->cap_floats = floats;
    }
    held_update(c);
    return 0;
}

void rc_checkpoint_release(rc_checkpoint *c)
{
    if (!c)
        return;
    free(c->counts);
    free(c->in);
    free(c->out);
    c->counts = NULL;
    c->in = c->out = NULL;
    c->cap_rows = c->cap_floats = 0;
    c->released = c->taken;
    rc_buf_free(&c->aux);
    rc_buf_init(&c->aux, 0);
    held_update(c);
}

void rc_checkpoint_swap_aux(rc_checkpoint *c, rc_buf *b)
{
    rc_buf t = c->aux;
    c->aux = *b;
    *b = t;
    rc_buf_reset(b);
    held_update(c);
}

size_t rc_checkpoint_bytes(const rc_checkpoint *c)
{
    return c ? atomic_load_explicit(&((rc_checkpoint *)c)->held, memory_order_relaxed) : 0;
}

int rc_checkpoint_reserve(rc_checkpoint *c, uint32_t rows, uint32_t dim)
{
    if (!c || dim == 0)
        return RC_EINVAL;
    return ensure(c, rows, dim);
}

/* Copies rows [0, rows) of one side. Rows of a table chunk are contiguous, so
 * the copy goes run by run (one memcpy per chunk, not per row). */
static void copy_side(const rc_table *t, uint32_t rows, uint32_t dim, int out, float *dst)
{
    uint32_t r = 0;
    while (r < rows) {
        const float *p = out ? rc_table_out(t, r) : rc_table_in(t, r);
        uint32_t k = 1;
        while (r + k < rows &&
               (out ? rc_table_out(t, r + k) : rc_table_in(t, r + k)) == p + (size_t)k * dim)
            k++;
        memcpy(dst + (size_t)r * dim, p, (size_t)k * dim * sizeof(float));
        r += k;
    }
}

static int copy_meta(rc_checkpoint *c, const rc_checkpoint_meta *m)
{
    if (m->noffsets > c->off_cap) {
        rc_checkpoint_offset *o = realloc(c->meta.offsets, m->noffsets * sizeof *o);
        if (!o)
            return RC_ENOMEM;
        c->meta.offsets = o;
        c->off_cap = m->noffsets;
    }
    rc_checkpoint_offset *keep = c->meta.offsets;
    c->meta = *m;
    c->meta.offsets = keep;
    c->meta.aux = NULL; /* the state section is c->aux */
    c->meta.aux_len = 0;
    if (m->noffsets)
        memcpy(keep, m->offsets, m->noffsets * sizeof *keep);
    return 0;
}

int rc_checkpoint_take(rc_checkpoint *c, const rc_table *t, const rc_checkpoint_meta *m)
{
    if (!c || !t || !m || m->ncounters > RC_CHECKPOINT_MAX_COUNTERS)
        return RC_EINVAL;
    uint32_t rows = rc_table_size(t), dim = rc_table_dim(t);
    if (ensure(c, rows, dim) || copy_meta(c, m))
        return RC_ENOMEM;
    c->t = t;
    c->rows = rows;
    c->dim = dim;
    c->ncities = rc_table_ncities(t);
    c->ncates = rc_table_ncates(t);
    for (uint32_t r = 0; r < rows; r++)
        c->counts[r] = rc_table_count(t, r);
    copy_side(t, rows, dim, 0, c->in);
    copy_side(t, rows, dim, 1, c->out);
    c->taken = 1;
    c->released = 0;
    c->live = 0;
    rc_buf_reset(&c->aux);
    return 0;
}

int rc_checkpoint_take_live(rc_checkpoint *c, const rc_table *t, const rc_checkpoint_meta *m)
{
    if (!c || !t || !m || m->ncounters > RC_CHECKPOINT_MAX_COUNTERS)
        return RC_EINVAL;
    if (copy_meta(c, m))
        return RC_ENOMEM;
    c->t = t;
    c->rows = rc_table_size(t);
    c->dim = rc_table_dim(t);
    c->ncities = rc_table_ncities(t);
    c->ncates = rc_table_ncates(t);
    c->taken = 1;
    c->released = 0;
    c->live = 1;
    rc_buf_reset(&c->aux);
    return 0;
}

const rc_checkpoint_meta *rc_checkpoint_meta_of(const rc_checkpoint *c)
{
    return c && c->taken ? &c->meta : NULL;
}

/* ---- directory ---- */

static int parse_name(const char *name, const char *prefix, const char *suffix, uint64_t *seq)
{
    size_t pl = strlen(prefix), sl = strlen(suffix), n = strlen(name);
    if (n != pl + 20 + sl || strncmp(name, prefix, pl) || strcmp(name + pl + 20, suffix))
        return -1;
    uint64_t v = 0;
    for (size_t i = pl; i < pl + 20; i++) {
        if (name[i] < '0' || name[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *seq = v;
    return 0;
}

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* All seqs of names prefix<20 digits>suffix under dir, newest first, in a
 * malloc'd array. Returns the count or RC_EIO / RC_ENOMEM. */
static int scan(const char *dir, const char *prefix, const char *suffix, uint64_t **out)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    size_t n = 0, cap = 16;
    uint64_t *v = malloc(cap * sizeof *v), seq;
    *out = NULL;
    if (!d || !v) {
        if (d)
            closedir(d);
        free(v);
        return d ? RC_ENOMEM : RC_EIO;
    }
    while ((de = readdir(d))) {
        if (parse_name(de->d_name, prefix, suffix, &seq))
            continue;
        if (n == cap) {
            uint64_t *w = realloc(v, (cap *= 2) * sizeof *w);
            if (!w) {
                closedir(d);
                free(v);
                return RC_ENOMEM;
            }
            v = w;
        }
        v[n++] = seq;
    }
    closedir(d);
    qsort(v, n, sizeof *v, cmp_desc);
    *out = v;
    return (int)n;
}

int rc_checkpoint_list(const char *dir, uint64_t *seqs, size_t cap)
{
    uint64_t *v;
    int n = scan(dir, "checkpoint-", ".rcc", &v);
    if (n < 0)
        return n;
    for (int i = 0; i < n && (size_t)i < cap && seqs; i++)
        seqs[i] = v[i];
    free(v);
    return n;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* Deletes all but the newest keep checkpoints. Failures are logged only: the
 * new checkpoint is durable already. */
static void prune(const char *dir, uint32_t keep)
{
    uint64_t *v;
    char path[4200];
    int n = scan(dir, "checkpoint-", ".rcc", &v);
    for (int i = (int)keep; i < n; i++) {
        snprintf(path, sizeof path, "%s/" NAME_FMT, dir, v[i]);
        if (unlink(path) && errno != ENOENT)
            rc_log_warn(MOD, "cannot delete an old checkpoint", "path=%s error=\"%s\"", path,
                        strerror(errno));
    }
    if (n >= 0)
        free(v);
}

int rc_checkpoint_lock_dir(const char *dir, char *eb, size_t el)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/LOCK", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return rc_err(eb, el, RC_EIO, "data directory %s: %s", dir, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        int busy = errno == EWOULDBLOCK;
        int saved = errno;
        close(fd);
        if (busy)
            return rc_err(eb, el, RC_EAGAIN, "data directory %s is in use by another process", dir);
        return rc_err(eb, el, RC_EIO, "data directory %s: lock: %s", dir, strerror(saved));
    }
    return fd;
}

/* ---- writing ---- */

typedef struct wr {
    int fd, err;
    const rc_checkpoint_write_opts *o; /* rows_done */
    uint32_t crc;
    uint64_t bytes, t0;
    double max_bps;
    unsigned char *buf;
    size_t len;
    int done_called;
} wr;

/* Sleeps so that bytes written so far take at least bytes / max_bps seconds. */
static void throttle(wr *w)
{
    if (w->max_bps <= 0)
        return;
    uint64_t want = (uint64_t)((double)w->bytes / w->max_bps * 1e9), now = rc_now_ns() - w->t0;
    if (want > now) {
        struct timespec ts = {(time_t)((want - now) / 1000000000u),
                              (long)((want - now) % 1000000000u)};
        while (nanosleep(&ts, &ts) && errno == EINTR)
            ;
    }
}

static void write_all(wr *w, const void *p, size_t n)
{
    const char *s = p;
    while (n && !w->err) {
        size_t step = RC_MIN(n, (size_t)STAGE);
        ssize_t k = write(w->fd, s, step);
        if (k < 0) {
            if (errno != EINTR)
                w->err = errno;
            continue;
        }
        s += k;
        n -= (size_t)k;
        w->bytes += (uint64_t)k;
        throttle(w);
    }
}

static void flush_stage(wr *w)
{
    write_all(w, w->buf, w->len);
    w->len = 0;
}

static void put(wr *w, const void *p, size_t n)
{
    if (w->err || n == 0)
        return;
    w->crc = rc_crc32c(w->crc, p, n);
    if (n >= STAGE / 2) {
        flush_stage(w);
        write_all(w, p, n);
        return;
    }
    if (w->len + n > STAGE)
        flush_stage(w);
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

static void put_u16(wr *w, uint16_t v) { put(w, &v, 2); }
static void put_u32(wr *w, uint32_t v) { put(w, &v, 4); }
static void put_u64(wr *w, uint64_t v) { put(w, &v, 8); }

static void put_str(wr *w, const char *s, size_t len)
{
    put_u16(w, (uint16_t)len);
    put(w, s, len);
}

/* Appends the CRC of the section written since the last one and restarts it. */
static void end_section(wr *w)
{
    uint32_t crc = w->crc;
    put(w, &crc, 4);
    w->crc = 0;
}

static void put_header(wr *w, const rc_checkpoint *c)
{
    unsigned char h[HEADER];
    uint32_t v32[8] = {c->ncities, c->ncates, c->meta.ncounters, c->meta.noffsets,
                       (uint32_t)strlen(c->meta.topic)};
    uint64_t rows = c->rows;
    memcpy(h, MAGIC, 8);
    uint32_t ver = VERSION, dim = c->dim;
    memcpy(h + 8, &ver, 4);
    memcpy(h + 12, &dim, 4);
    memcpy(h + 16, &c->meta.seq, 8);
    memcpy(h + 24, &c->meta.created_ms, 8);
    memcpy(h + 32, &rows, 8);
    memcpy(h + 40, v32, 20);
    uint32_t hcrc = rc_crc32c(0, h, 60);
    memcpy(h + 60, &hcrc, 4);
    put(w, h, HEADER);
    w->crc = 0; /* the header carries its own */
}

/* One side of a live take, straight from the table's chunks (run by run). */
static void put_live(wr *w, const rc_checkpoint *c, int out)
{
    uint32_t r = 0, dim = c->dim;
    while (r < c->rows && !w->err) {
        const float *p = out ? rc_table_out(c->t, r) : rc_table_in(c->t, r);
        uint32_t k = 1;
        while (r + k < c->rows &&
               (out ? rc_table_out(c->t, r + k) : rc_table_in(c->t, r + k)) == p + (size_t)k * dim)
            k++;
        put(w, p, (size_t)k * dim * sizeof(float));
        r += k;
    }
}

static void put_body(wr *w, const rc_checkpoint *c)
{
    const rc_checkpoint_meta *m = &c->meta;
    put(w, m->topic, strlen(m->topic));
    for (uint32_t i = 0; i < m->ncounters; i++) {
        put_str(w, m->counters[i].name, strlen(m->counters[i].name));
        put_u64(w, m->counters[i].value);
    }
    for (uint32_t i = 0; i < m->noffsets; i++) {
        put_u32(w, (uint32_t)m->offsets[i].partition);
        put_u64(w, (uint64_t)m->offsets[i].next);
    }
    for (uint32_t i = 0; i < c->ncities; i++) {
        const char *s = rc_table_city_name(c->t, i);
        put_str(w, s, strlen(s));
    }
    for (uint32_t i = 0; i < c->ncates; i++) {
        const char *s = rc_table_cate_name(c->t, i);
        put_str(w, s, strlen(s));
    }
    for (uint32_t r = 0; r < c->rows && !w->err; r++) {
        size_t len;
        const char *id = rc_table_item_id(c->t, r, &len);
        put_str(w, id, len);
        put_u32(w, rc_table_city(c->t, r));
        put_u32(w, rc_table_cate(c->t, r));
        put_u32(w, c->live ? rc_table_count(c->t, r) : c->counts[r]);
    }
    end_section(w);
    if (c->live)
        put_live(w, c, 0);
    else
        put(w, c->in, (size_t)c->rows * c->dim * sizeof(float));
    end_section(w);
    if (c->live)
        put_live(w, c, 1);
    else
        put(w, c->out, (size_t)c->rows * c->dim * sizeof(float));
    end_section(w);
    put(w, c->aux.data, c->aux.len); /* the state section (version 2) */
    put_u64(w, c->aux.len);
    end_section(w);
    flush_stage(w);
}

/* Tells the owner of a live take that the table is no longer read (once). */
static void rows_done(wr *w)
{
    const rc_checkpoint_write_opts *o = w->o;
    if (o && o->rows_done && !w->done_called)
        o->rows_done(o->ud);
    w->done_called = 1;
}

/* Writes tmp, fsyncs and closes it. Returns 0 or an errno. */
static int write_file(rc_checkpoint *c, const char *tmp, const rc_checkpoint_write_opts *o,
                      uint64_t *bytes)
{
    wr w = {.buf = c->stage, .max_bps = o->max_mb_s * 1e6, .t0 = rc_now_ns(), .o = o};
    w.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w.fd < 0) {
        int e = errno;
        rows_done(&w);
        return e;
    }
    put_header(&w, c);
    put_body(&w, c);
    rows_done(&w); /* in the page cache now: the fsync needs no rows */
    if (!w.err && fsync(w.fd))
        w.err = errno;
    if (close(w.fd) && !w.err)
        w.err = errno;
    *bytes = w.bytes;
    return w.err;
}

/* Test hook, inert unless the environment sets RC_TEST_CHECKPOINT_HOLD=PATH:
 * the crash tests must land a kill after a checkpoint became durable (renamed,
 * directory synced) and before the writer reports it (so before its offsets
 * are committed). While the file PATH exists, a checkpoint that reached that
 * point writes its sequence number to PATH.reached and waits for PATH to go
 * away. */
static void test_hold_after_rename(uint64_t seq)
{
    const char *hold = getenv("RC_TEST_CHECKPOINT_HOLD");
    char reached[4200], tmp[4300];
    if (!hold || !*hold || access(hold, F_OK) != 0)
        return;
    snprintf(reached, sizeof reached, "%s.reached", hold);
    snprintf(tmp, sizeof tmp, "%s.tmp", reached);
    FILE *f = fopen(tmp, "w");
    if (f) {
        fprintf(f, "%llu\n", (unsigned long long)seq);
        if (fclose(f) == 0)
            rename(tmp, reached);
    }
    while (access(hold, F_OK) == 0)
        usleep(1000);
}

int rc_checkpoint_write(rc_checkpoint *c, const rc_checkpoint_write_opts *o,
                        rc_checkpoint_info *info, char *eb, size_t el)
{
    char tmp[4200], path[4200];
    uint64_t seqs[1] = {0}, bytes = 0, t0 = rc_now_ns();
    if (!c || !o || !o->dir || !o->dir[0] || !c->taken || c->released || o->max_mb_s < 0) {
        if (o && o->rows_done)
            o->rows_done(o->ud);
        return rc_err(eb, el, RC_EINVAL, "checkpoint: nothing taken or no directory");
    }
    uint64_t *bad = NULL;
    int n = rc_checkpoint_list(o->dir, seqs, 1);
    int nbad = n < 0 ? n : scan(o->dir, "checkpoint-", ".rcc.corrupt", &bad);
    if (n < 0 || nbad < 0) {
        int e = errno;
        if (o->rows_done)
            o->rows_done(o->ud);
        return rc_err(eb, el, RC_EIO, "checkpoint %s: cannot list: %s", o->dir, strerror(e));
    }
    /* Numbers only grow, past set-aside corrupt files too: a name never
     * denotes two different states. */
    c->meta.seq = 1 + RC_MAX(n ? seqs[0] : 0, nbad ? bad[0] : 0);
    free(bad);
    snprintf(tmp, sizeof tmp, "%s/" TMP_FMT, o->dir, c->meta.seq);
    snprintf(path, sizeof path, "%s/" NAME_FMT, o->dir, c->meta.seq);
    int err = write_file(c, tmp, o, &bytes);
    const char *what = "write", *where = tmp;
    if (!err && rename(tmp, path))
        err = errno, what = "rename";
    if (!err && fsync_dir(o->dir))
        err = errno, what = "fsync directory", where = o->dir;
    if (err) {
        unlink(tmp);
        return rc_err(eb, el, RC_EIO, "checkpoint %s: %s: %s", where, what, strerror(err));
    }
    test_hold_after_rename(c->meta.seq);
    prune(o->dir, o->keep ? o->keep : 2);
    if (info) {
        info->seq = c->meta.seq;
        info->bytes = bytes;
        info->write_ns = rc_now_ns() - t0;
        info->rows = c->rows;
        memcpy(info->path, path, RC_MIN(strlen(path) + 1, sizeof info->path));
        info->path[sizeof info->path - 1] = '\0';
    }
    return 0;
}

/* ---- reading ----
 * The main thread parses section A (meta, names, rows) and appends rows; a
 * second thread reads the two vector sections with pread straight into the
 * rows already appended (rows below rc_table_size are its to write: the
 * appender never touches a row's vectors), so the vector I/O and CRC hide
 * behind the id interning, which is the slow part (a hash insert per item). */

typedef struct rd {
    int fd, err, short_read;
    uint32_t crc;
    uint64_t left; /* bytes of section A not consumed yet */
    unsigned char *buf;
    size_t pos, len;
} rd;

/* Refills the buffer with up to STAGE bytes; -1 at end of file or error. */
static int fill(rd *r)
{
    r->pos = r->len = 0;
    while (r->len < STAGE) {
        ssize_t k = read(r->fd, r->buf + r->len, STAGE - r->len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            r->err = errno;
        if (k <= 0)
            break;
        r->len += (size_t)k;
    }
    if (r->len)
        return 0;
    r->short_read = 1;
    return -1;
}

/* Raw bytes, outside the CRC and the section accounting. */
static int raw(rd *r, void *dst, size_t n)
{
    unsigned char *d = dst;
    while (n) {
        if (r->pos == r->len && fill(r))
            return -1;
        size_t k = RC_MIN(n, r->len - r->pos);
        memcpy(d, r->buf + r->pos, k);
        r->pos += k;
        d += k;
        n -= k;
    }
    return 0;
}

/* n bytes of section A into dst, CRC'd. */
static int get(rd *r, void *dst, size_t n)
{
    if (r->short_read || n > r->left) {
        r->short_read = 1;
        return -1;
    }
    r->left -= n;
    if (raw(r, dst, n))
        return -1;
    r->crc = rc_crc32c(r->crc, dst, n);
    return 0;
}

static uint16_t get_u16(rd *r)
{
    uint16_t v = 0;
    get(r, &v, 2);
    return v;
}

static uint32_t get_u32(rd *r)
{
    uint32_t v = 0;
    get(r, &v, 4);
    return v;
}

static uint64_t get_u64(rd *r)
{
    uint64_t v = 0;
    get(r, &v, 8);
    return v;
}

typedef struct hdr {
    uint32_t version, dim, ncities, ncates, ncounters, noffsets, topic_len;
    uint64_t seq, rows, vec_bytes; /* vec_bytes: one vector section */
    int64_t created_ms;
    uint64_t aux_len, tail; /* version 2: the state section; tail = it + u64 + CRC */
    uint32_t aux_crc;
} hdr;

static int pread_all(int fd, void *dst, size_t n, uint64_t off);

static int read_header(rd *r, hdr *h, uint64_t size, const char *path, char *eb, size_t el)
{
    unsigned char b[HEADER];
    uint32_t v32[5], hcrc;
    if (size < HEADER + 12 || raw(r, b, HEADER))
        return rc_err(eb, el, RC_ECORRUPT, "checkpoint %s: truncated (%" PRIu64 " bytes)", path,
                      size);
    memcpy(&hcrc, b + 60, 4);
    if (memcmp(b, MAGIC, 8) || rc_crc32c(0, b, 60) != hcrc)
        return rc_err(eb, el, RC_ECORRUPT, "checkpoint %s: bad magic or header checksum", path);
    memcpy(&h->version, b + 8, 4);
    memcpy(&h->dim, b + 12, 4);
    memcpy(&h->seq, b + 16, 8);
    memcpy(&h->created_ms, b + 24, 8);
    memcpy(&h->rows, b + 32, 8);
    memcpy(v32, b + 40, 20);
    h->ncities = v32[0];
    h->ncates = v32[1];
    h->ncounters = v32[2];
    h->noffsets = v32[3];
    h->topic_len = v32[4];
    if (h->version != VERSION && h->version != 1)
        return rc_err(eb, el, RC_ECORRUPT,
                      "checkpoint %s: format version %u, this build reads 1 and %u", path,
                      h->version, VERSION);
    if (h->dim == 0 || h->dim % 8 || h->dim > 1024 || h->rows > MAX_ROWS ||
        h->ncities > MAX_ATTRS || h->ncates > MAX_ATTRS ||
        h->ncounters > RC_CHECKPOINT_MAX_COUNTERS || h->noffsets > MAX_OFFSETS ||
        h->topic_len > RC_CHECKPOINT_TOPIC_MAX)
        return rc_err(eb, el, RC_ECORRUPT, "checkpoint %s: inconsistent header", path);
    h->vec_bytes = h->rows * h->dim * sizeof(float);
    uint64_t min_a = h->topic_len + (uint64_t)h->ncounters * 10 + (uint64_t)h->noffsets * 12 +
                     ((uint64_t)h->ncities + h->ncates) * 2 + h->rows * 15;
    h->aux_len = h->tail = 0;
    if (h->version >= 2) { /* the trailer: u64 state bytes, CRC */
        unsigned char t[12];
        if (size < HEADER + 12 || pread_all(r->fd, t, 12, size - 12))
            return rc_err(eb, el, RC_ECORRUPT, "checkpoint %s: truncated (%" PRIu64 " bytes)", path,
                          size);
        memcpy(&h->aux_len, t, 8);
        memcpy(&h->aux_crc, t + 8, 4);
        if (h->aux_len > size - HEADER - 12)
            return rc_err(eb, el, RC_ECORRUPT, "checkpoint %s: inconsistent state section", path);
        h->tail = h->aux_len + 12;
    }
    if (size < HEADER + min_a + 4 + 2 * (h->vec_bytes + 4) + h->tail)
        return rc_err(eb, el, RC_ECORRUPT, "checkpoint %s: truncated (%" PRIu64 " bytes)", path,
                      size);
    r->left = size - HEADER - 4 - 2 * (h->vec_bytes + 4) - h->tail;
    return 0;
}

static int read_meta(rd *r, const hdr *h, rc_checkpoint_meta *m)
{
    char name[65536];
    m->seq = h->seq;
    m->created_ms = h->created_ms;
    if (get(r, m->topic, h->topic_len))
        return RC_ECORRUPT;
    m->topic[h->topic_len] = '\0';
    for (uint32_t i = 0; i < h->ncounters; i++) {
        uint16_t len = get_u16(r);
        if (get(r, name, len) || len > RC_CHECKPOINT_NAME_MAX)
            return RC_ECORRUPT;
        name[len] = '\0';
        rc_checkpoint_meta_set(m, name, get_u64(r));
    }
    if (h->noffsets && !(m->offsets = malloc(h->noffsets * sizeof *m->offsets)))
        return RC_ENOMEM;
    for (uint32_t i = 0; i < h->noffsets; i++) {
        m->offsets[i].partition = (int32_t)get_u32(r);
        m->offsets[i].next = (int64_t)get_u64(r);
        m->noffsets++;
        if (m->offsets[i].partition < 0 || m->offsets[i].next < 0)
            return RC_ECORRUPT;
    }
    return r->short_read ? RC_ECORRUPT : 0;
}

/* Interns n names in order: the file's ids must equal the table's. */
static int read_names(rd *r, rc_table *t, uint32_t n, int city)
{
    char s[65536];
    for (uint32_t i = 0; i < n; i++) {
        uint16_t len = get_u16(r);
        uint32_t id;
        if (get(r, s, len))
            return RC_ECORRUPT;
        int rc = city ? rc_table_city_id(t, s, len, &id) : rc_table_cate_id(t, s, len, &id);
        if (rc || id != i)
            return RC_ECORRUPT;
    }
    return 0;
}

static int read_rows(rd *r, rc_table *t, const hdr *h)
{
    char id[65536];
    for (uint64_t i = 0; i < h->rows; i++) {
        uint16_t len = get_u16(r);
        uint32_t row;
        if (len == 0 || get(r, id, len))
            return RC_ECORRUPT;
        uint32_t city = get_u32(r), cate = get_u32(r), count = get_u32(r);
        if (r->short_read || city >= h->ncities || cate >= h->ncates)
            return RC_ECORRUPT;
        int rc = rc_table_append(t, id, len, city, cate, count, &row);
        if (rc)
            return rc == RC_ENOMEM ? RC_ENOMEM : RC_ECORRUPT; /* EINVAL: duplicate id */
        if (row != i)
            return RC_ECORRUPT;
    }
    uint32_t want = 0;
    if (r->left != 0 || raw(r, &want, 4) || want != r->crc)
        return RC_ECORRUPT;
    return 0;
}

/* ---- the vector thread ---- */

typedef struct vec_job {
    int fd;
    rc_table *t;
    const rc_checkpoint_hooks *hooks;
    uint32_t rows, dim;
    uint64_t off; /* file offset of the input section */
    atomic_int abort;
    int rc, err; /* result: 0, RC_ECORRUPT, RC_EIO (+ errno) */
} vec_job;

static int pread_all(int fd, void *dst, size_t n, uint64_t off)
{
    char *d = dst;
    while (n) {
        ssize_t k = pread(fd, d, n, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k < 0 ? errno : -1;
        d += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

/* Rows [i, i+k) that are appended and contiguous in memory; 0 once aborted. */
static uint32_t next_run(vec_job *j, uint32_t i, int out, float **p)
{
    uint32_t avail;
    while ((avail = rc_table_size(j->t)) <= i) {
        if (atomic_load(&j->abort))
            return 0;
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    *p = out ? rc_table_out(j->t, i) : rc_table_in(j->t, i);
    uint32_t k = 1;
    while (i + k < avail &&
           (out ? rc_table_out(j->t, i + k) : rc_table_in(j->t, i + k)) == *p + (size_t)k * j->dim)
        k++;
    return k;
}

static int read_side(vec_job *j, int out, uint64_t off)
{
    uint32_t crc = 0, want = 0, i = 0;
    while (i < j->rows) {
        float *p;
        uint32_t k = next_run(j, i, out, &p);
        size_t n = (size_t)k * j->dim * sizeof(float);
        if (k == 0)
            return RC_ECORRUPT;
        if ((j->err = pread_all(j->fd, p, n, off)))
            return j->err > 0 ? RC_EIO : RC_ECORRUPT;
        crc = rc_crc32c(crc, p, n);
        if (!out && j->hooks && j->hooks->on_rows)
            j->hooks->on_rows(j->hooks->ud, j->t, i, k);
        off += n;
        i += k;
    }
    if ((j->err = pread_all(j->fd, &want, 4, off)))
        return j->err > 0 ? RC_EIO : RC_ECORRUPT;
    return want == crc ? 0 : RC_ECORRUPT;
}

static void *vec_main(void *arg)
{
    vec_job *j = arg;
    uint64_t side = (uint64_t)j->rows * j->dim * sizeof(float) + 4;
    j->rc = read_side(j, 0, j->off);
    if (j->rc == 0)
        j->rc = read_side(j, 1, j->off + side);
    return NULL;
}

static int check_fit(const hdr *h, const rc_table_opts *o, const char *path, char *eb, size_t el)
{
    if (o && o->dim && o->dim != h->dim)
        return rc_err(eb, el, RC_EINVAL, "checkpoint %s: dimension %u, configured model.dim is %u",
                      path, h->dim, o->dim);
    if (o && o->max_items && h->rows > o->max_items)
        return rc_err(eb, el, RC_EINVAL,
                      "checkpoint %s: %" PRIu64 " items exceed model.max_items %u", path, h->rows,
                      o->max_items);
    return 0;
}

static int parse_error(int rc, const rd *r, const vec_job *j, const char *path, char *eb, size_t el)
{
    if (rc == RC_ENOMEM)
        return rc_err(eb, el, rc, "checkpoint %s: out of memory", path);
    if (r->err || (rc == RC_EIO && j->err > 0))
        return rc_err(eb, el, RC_EIO, "checkpoint %s: read: %s", path,
                      strerror(r->err ? r->err : j->err));
    if (r->short_read)
        return rc_err(eb, el, RC_ECORRUPT, "checkpoint %s: truncated", path);
    return rc_err(eb, el, RC_ECORRUPT, "checkpoint %s: checksum mismatch or inconsistent contents",
                  path);
}

/* The state section into m->aux (version 2), its CRC checked. */
static int read_aux(int fd, const hdr *h, uint64_t size, rc_checkpoint_meta *m)
{
    uint64_t len = h->aux_len;
    if (len > SIZE_MAX - 8)
        return RC_ENOMEM;
    unsigned char *p = malloc(len + 8); /* + the length, CRC'd with it */
    if (!p)
        return RC_ENOMEM;
    int e = pread_all(fd, p, len + 8, size - h->tail);
    if (e) {
        free(p);
        return e > 0 ? RC_EIO : RC_ECORRUPT;
    }
    if (rc_crc32c(0, p, len + 8) != h->aux_crc) {
        free(p);
        return RC_ECORRUPT;
    }
    m->aux = p;
    m->aux_len = len;
    return 0;
}

static int parse(rd *r, uint64_t size, const rc_table_opts *opts, const rc_checkpoint_hooks *hk,
                 rc_table **out, rc_checkpoint_meta *m, const char *path, char *eb, size_t el)
{
    hdr h;
    rc_table *t = NULL;
    pthread_t th;
    int rc = read_header(r, &h, size, path, eb, el), started = 0;
    if (rc || (rc = check_fit(&h, opts, path, eb, el)))
        return rc;
    rc_table_opts to = opts ? *opts : (rc_table_opts){0};
    to.dim = h.dim;
    if ((rc = rc_table_create(&to, &t, eb, el)))
        return rc;
    vec_job j = {.fd = r->fd,
                 .t = t,
                 .hooks = hk,
                 .rows = (uint32_t)h.rows,
                 .dim = h.dim,
                 .off = size - 2 * (h.vec_bytes + 4) - h.tail};
    atomic_init(&j.abort, 0);
    /* Without the thread, the vectors are read after the rows (below). */
    started = pthread_create(&th, NULL, vec_main, &j) == 0;
    rc = read_meta(r, &h, m);
    if (!rc && !(rc = read_names(r, t, h.ncities, 1)) && !(rc = read_names(r, t, h.ncates, 0)))
        rc = read_rows(r, t, &h);
    if (rc)
        atomic_store(&j.abort, 1);
    if (started)
        pthread_join(th, NULL);
    else if (!rc)
        vec_main(&j);
    if (!rc)
        rc = j.rc;
    if (!rc && h.version >= 2)
        rc = read_aux(r->fd, &h, size, m);
    if (rc) {
        rc_table_destroy(t);
        rc_checkpoint_meta_free(m);
        return parse_error(rc, r, &j, path, eb, el);
    }
    *out = t;
    return 0;
}

int rc_checkpoint_load(const char *path, const rc_table_opts *opts, rc_table **table,
                       rc_checkpoint_meta *meta, char *eb, size_t el)
{
    return rc_checkpoint_load_with(path, opts, NULL, table, meta, eb, el);
}

int rc_checkpoint_load_with(const char *path, const rc_table_opts *opts,
                            const rc_checkpoint_hooks *hooks, rc_table **table,
                            rc_checkpoint_meta *meta, char *eb, size_t el)
{
    struct stat st;
    if (!path || !table || !meta)
        return rc_err(eb, el, RC_EINVAL, "checkpoint: path, table and meta required");
    *table = NULL;
    memset(meta, 0, sizeof *meta);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return rc_err(eb, el, errno == ENOENT ? RC_ENOENT : RC_EIO, "checkpoint %s: %s", path,
                      strerror(errno));
    rd r = {.fd = fd, .buf = malloc(STAGE)};
    int rc;
    if (!r.buf)
        rc = rc_err(eb, el, RC_ENOMEM, "checkpoint %s: out of memory", path);
    else if (fstat(fd, &st))
        rc = rc_err(eb, el, RC_EIO, "checkpoint %s: %s", path, strerror(errno));
    else
        rc = parse(&r, (uint64_t)st.st_size, opts, hooks, table, meta, path, eb, el);
    free(r.buf);
    close(fd);
    return rc;
}

/* Removes temp files a crash left behind (never a complete checkpoint). */
static void remove_temps(const char *dir)
{
    uint64_t *v;
    char path[4200];
    int n = scan(dir, ".checkpoint-", ".tmp", &v);
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/" TMP_FMT, dir, v[i]);
        if (unlink(path) == 0)
            rc_log_info(MOD, "removed an unfinished checkpoint", "path=%s", path);
    }
    if (n >= 0)
        free(v);
}

static void set_aside(const char *path, const char *why)
{
    char bad[4300];
    snprintf(bad, sizeof bad, "%s.corrupt", path);
    if (rename(path, bad))
        rc_log_warn(MOD, "cannot rename a corrupt checkpoint", "path=%s error=\"%s\"", path,
                    strerror(errno));
    rc_log_warn(MOD, "skipping a corrupt checkpoint", "path=%s moved_to=%s error=\"%s\"", path, bad,
                why);
}

int rc_checkpoint_count_invalid(const char *dir)
{
    uint64_t *v;
    int n = 0, k;
    if ((k = scan(dir, "checkpoint-", ".rcc.corrupt", &v)) < 0)
        return k;
    free(v);
    n += k;
    if ((k = scan(dir, "checkpoint-", ".rcc", &v)) < 0)
        return k;
    free(v);
    return n + k;
}

int rc_checkpoint_restore(const char *dir, const rc_table_opts *opts, rc_table **table,
                          rc_checkpoint_meta *meta, char *pathout, size_t pathlen, char *eb,
                          size_t el)
{
    return rc_checkpoint_restore_with(dir, opts, NULL, table, meta, pathout, pathlen, eb, el);
}

int rc_checkpoint_restore_with(const char *dir, const rc_table_opts *opts,
                               const rc_checkpoint_hooks *hooks, rc_table **table,
                               rc_checkpoint_meta *meta, char *pathout, size_t pathlen, char *eb,
                               size_t el)
{
    uint64_t *v;
    char path[4200], why[512];
    if (!dir || !table || !meta)
        return rc_err(eb, el, RC_EINVAL, "checkpoint: dir, table and meta required");
    remove_temps(dir);
    int n = scan(dir, "checkpoint-", ".rcc", &v), rc = RC_ENOENT;
    if (n < 0)
        return rc_err(eb, el, n, "checkpoint %s: cannot list: %s", dir, strerror(errno));
    rc_err(eb, el, RC_ENOENT, "checkpoint %s: no checkpoint", dir);
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/" NAME_FMT, dir, v[i]);
        rc = rc_checkpoint_load_with(path, opts, hooks, table, meta, why, sizeof why);
        if (rc == 0) {
            if (pathout)
                snprintf(pathout, pathlen, "%s", path);
            break;
        }
        if (rc == RC_ECORRUPT) {
            set_aside(path, why);
        } else if (rc == RC_EIO || rc == RC_ENOENT) {
            rc_log_warn(MOD, "skipping an unreadable checkpoint", "path=%s error=\"%s\"", path,
                        why);
        } else {
            rc_err(eb, el, rc, "%s", why);
            break;
        }
        rc = RC_ENOENT;
    }
    free(v);
    return rc;
}
