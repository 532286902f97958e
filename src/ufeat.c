/* ufeat — user profile features of an offline click log (see ufeat.h).
 *
 * The log's own features come from the profiles rc_clicklog kept while
 * loading JSON lines (strings interned once, hashed here with rc_tower_hash).
 *
 * A --user-features file is read twice: the first pass checks the shape
 * (header, field counts) and finds the numeric columns, collecting their
 * values; the second assigns each known user its device and tags. Numeric
 * columns are bucketed by quantiles of the file's values: with the values
 * sorted (one per row that has one), the edges are the values at ranks
 * floor(b * n / 8) for b = 1..7, duplicates merged; a value's bucket is the
 * number of edges <= it (0..7), the tag "column=q<bucket>". So a column with
 * few distinct values gets fewer buckets, never an empty middle one. */
#include "recalld/ufeat.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "recalld/clicklog.h"
#include "recalld/common.h"
#include "recalld/tower.h"

#define UF_LINE_MAX 65536u /* bytes per line of a features file */
#define UF_MAX_COLS 64u    /* columns of a features file */
#define UF_MAX_TAGS 64u    /* tags kept per user from a file */
#define UF_BUCKETS  8u     /* quantile buckets of a numeric column */
#define UF_NAME_MAX 64u    /* column name bytes used in a tag */

static uint64_t hash_str(const char *s, size_t n) { return rc_tower_hash(s, n); }

static int alloc_store(uint32_t nusers, size_t ntags, rc_ufeat **out)
{
    rc_ufeat *f = calloc(1, sizeof *f);
    if (!f)
        return RC_ENOMEM;
    f->nusers = nusers;
    f->device = calloc((size_t)nusers + 1, sizeof *f->device);
    f->tag_off = calloc((size_t)nusers + 1, sizeof *f->tag_off);
    f->tags = malloc((ntags ? ntags : 1) * sizeof *f->tags);
    if (!f->device || !f->tag_off || !f->tags) {
        rc_ufeat_free(f);
        return RC_ENOMEM;
    }
    *out = f;
    return 0;
}

int rc_ufeat_from_log(const rc_clicklog *log, rc_ufeat **out)
{
    if (!log || !out)
        return RC_EINVAL;
    *out = NULL;
    uint32_t nusers = rc_dict_size(log->users), np = RC_MIN(log->nprofiles, nusers);
    size_t ntags = 0;
    for (uint32_t u = 0; u < np; u++)
        ntags += log->profiles[u].ntags;
    rc_ufeat *f;
    int rc = alloc_store(nusers, ntags, &f);
    if (rc)
        return rc;
    /* Tag strings are hashed once each, not once per user. */
    uint32_t ndistinct = log->tags ? rc_dict_size(log->tags) : 0;
    uint64_t *th = malloc((ndistinct ? ndistinct : 1) * sizeof *th);
    if (!th) {
        rc_ufeat_free(f);
        return RC_ENOMEM;
    }
    for (uint32_t t = 0; t < ndistinct; t++) {
        size_t len;
        const char *s = rc_dict_str(log->tags, t, &len);
        th[t] = hash_str(s, len);
    }
    uint32_t w = 0;
    for (uint32_t u = 0; u < nusers; u++) {
        f->tag_off[u] = w;
        if (u >= np)
            continue;
        const rc_click_profile *p = &log->profiles[u];
        if (p->device) {
            size_t len;
            const char *s = rc_dict_str(log->devices, p->device - 1, &len);
            f->device[u] = s ? hash_str(s, len) : 0;
            f->users_with_device += f->device[u] != 0;
        }
        for (uint32_t i = 0; i < p->ntags; i++)
            f->tags[w++] = th[log->tag_ids[p->tag_off + i]];
        f->users_with_tags += p->ntags > 0;
    }
    f->tag_off[nusers] = w;
    free(th);
    *out = f;
    return 0;
}

void rc_ufeat_free(rc_ufeat *f)
{
    if (!f)
        return;
    free(f->device);
    free(f->tag_off);
    free(f->tags);
    free(f);
}

/* ---- the features file ---- */

struct cell {
    char *s;
    size_t n;
};

struct column {
    char name[UF_NAME_MAX + 1];
    int device;  /* named "device" */
    int numeric; /* every non-empty value so far is a number */
    double *vals;
    size_t nvals, cap;
    double edges[UF_BUCKETS - 1];
    uint32_t nedges;
};

struct ufile {
    const char *path;
    FILE *fp;
    char *line;
    uint64_t lineno;
    char sep;
    uint32_t ncols;
    struct cell cells[UF_MAX_COLS];
    struct column *cols;
};

/* Reads the next line (EOL stripped) into u->line. Returns 1, 0 at the end,
 * RC_E2BIG (over UF_LINE_MAX), RC_EIO. */
static int next_line(struct ufile *u, size_t *len)
{
    if (!fgets(u->line, (int)UF_LINE_MAX + 2, u->fp))
        return ferror(u->fp) ? RC_EIO : 0;
    u->lineno++;
    size_t n = strlen(u->line);
    if (n && u->line[n - 1] == '\n')
        n--;
    else if (!feof(u->fp))
        return RC_E2BIG;
    if (n && u->line[n - 1] == '\r')
        n--;
    u->line[n] = '\0';
    *len = n;
    return 1;
}

static void trim_cell(struct cell *c)
{
    while (c->n && (c->s[0] == ' ' || c->s[0] == '\t')) {
        c->s++;
        c->n--;
    }
    while (c->n && (c->s[c->n - 1] == ' ' || c->s[c->n - 1] == '\t'))
        c->n--;
    if (c->n >= 2 && c->s[0] == '"' && c->s[c->n - 1] == '"') {
        c->s++;
        c->n -= 2;
    }
}

/* Splits the line at u->sep; returns the field count (cells beyond
 * UF_MAX_COLS are counted, not kept). */
static uint32_t split_line(struct ufile *u, char *s, size_t len)
{
    uint32_t n = 0;
    char *end = s + len, *p = s;
    for (;;) {
        char *q = memchr(p, u->sep, (size_t)(end - p));
        if (n < UF_MAX_COLS) {
            u->cells[n] = (struct cell){p, (size_t)((q ? q : end) - p)};
            trim_cell(&u->cells[n]);
        }
        n++;
        if (!q)
            return n;
        p = q + 1;
    }
}

static int is_blank(const char *s) { return s[strspn(s, " \t")] == '\0'; }

static int parse_number(const struct cell *c, double *v)
{
    char tmp[64];
    if (c->n == 0 || c->n >= sizeof tmp)
        return -1;
    memcpy(tmp, c->s, c->n);
    tmp[c->n] = '\0';
    char *e;
    errno = 0;
    *v = strtod(tmp, &e);
    return *e || errno || !isfinite(*v) ? -1 : 0;
}

static int push_val(struct column *c, double v)
{
    if (c->nvals == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 256;
        double *nv = realloc(c->vals, nc * sizeof *nv);
        if (!nv)
            return RC_ENOMEM;
        c->vals = nv;
        c->cap = nc;
    }
    c->vals[c->nvals++] = v;
    return 0;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void make_edges(struct column *c)
{
    c->nedges = 0;
    if (!c->numeric || c->nvals == 0)
        return;
    qsort(c->vals, c->nvals, sizeof *c->vals, cmp_dbl);
    for (uint32_t b = 1; b < UF_BUCKETS; b++) {
        double e = c->vals[(size_t)b * c->nvals / UF_BUCKETS];
        if (e > c->vals[0] && (c->nedges == 0 || e > c->edges[c->nedges - 1]))
            c->edges[c->nedges++] = e;
    }
}

static uint32_t bucket_of(const struct column *c, double v)
{
    uint32_t b = 0;
    while (b < c->nedges && c->edges[b] <= v)
        b++;
    return b;
}

static int uf_open(struct ufile *u, const char *path, char *eb, size_t el)
{
    u->path = path;
    u->lineno = 0;
    errno = 0;
    if (!(u->fp = fopen(path, "r")))
        return rc_err(eb, el, errno == ENOENT ? RC_ENOENT : RC_EIO, "user features %s: %s", path,
                      strerror(errno ? errno : EIO));
    return 0;
}

static int line_err(const struct ufile *u, int rc, char *eb, size_t el)
{
    if (rc == RC_E2BIG)
        return rc_err(eb, el, RC_EINVAL, "user features %s: line %llu: longer than %u bytes",
                      u->path, (unsigned long long)u->lineno, UF_LINE_MAX);
    return rc_err(eb, el, RC_EIO, "user features %s: line %llu: read error", u->path,
                  (unsigned long long)u->lineno + 1);
}

/* Reads and checks the header; sets the separator and the columns. */
static int read_header(struct ufile *u, char *eb, size_t el)
{
    size_t len;
    int rc;
    while ((rc = next_line(u, &len)) == 1 && is_blank(u->line))
        ;
    if (rc < 0)
        return line_err(u, rc, eb, el);
    if (rc == 0)
        return rc_err(eb, el, RC_EINVAL, "user features %s: empty file (expected a header row)",
                      u->path);
    uint32_t before = u->ncols;
    u->sep = strchr(u->line, '\t') ? '\t' : strchr(u->line, ';') ? ';' : ',';
    u->ncols = split_line(u, u->line, len);
    if (u->cols && u->ncols != before) {
        u->ncols = before; /* cols has that many entries */
        return rc_err(eb, el, RC_EIO, "user features %s: the file changed while being read",
                      u->path);
    }
    if (u->ncols > UF_MAX_COLS)
        return rc_err(eb, el, RC_EINVAL, "user features %s: line %llu: %u columns, at most %u",
                      u->path, (unsigned long long)u->lineno, u->ncols, UF_MAX_COLS);
    if (u->ncols < 2 || u->cells[0].n == 0)
        return rc_err(eb, el, RC_EINVAL,
                      "user features %s: line %llu: the header needs a user column and at least "
                      "one feature column",
                      u->path, (unsigned long long)u->lineno);
    if (u->cols) /* the second pass: the columns of the first stay */
        return 0;
    if (!(u->cols = calloc(u->ncols, sizeof *u->cols)))
        return rc_err(eb, el, RC_ENOMEM, "user features: out of memory");
    for (uint32_t j = 0; j < u->ncols; j++) {
        struct column *c = &u->cols[j];
        const struct cell *h = &u->cells[j];
        if (h->n)
            snprintf(c->name, sizeof c->name, "%.*s", (int)RC_MIN(h->n, UF_NAME_MAX), h->s);
        else
            snprintf(c->name, sizeof c->name, "c%u", j);
        c->device = strcasecmp(c->name, "device") == 0;
        c->numeric = !c->device;
    }
    return 0;
}

/* The next data row split into u->cells: 1, 0 at the end, or an error (a
 * ragged row, an empty user id). */
static int next_row(struct ufile *u, char *eb, size_t el)
{
    size_t len;
    int rc;
    while ((rc = next_line(u, &len)) == 1 && is_blank(u->line))
        ;
    if (rc <= 0)
        return rc < 0 ? line_err(u, rc, eb, el) : 0;
    uint32_t n = split_line(u, u->line, len);
    if (n != u->ncols)
        return rc_err(eb, el, RC_EINVAL,
                      "user features %s: line %llu: %u fields, the header has %u", u->path,
                      (unsigned long long)u->lineno, n, u->ncols);
    if (u->cells[0].n == 0)
        return rc_err(eb, el, RC_EINVAL, "user features %s: line %llu: empty user id", u->path,
                      (unsigned long long)u->lineno);
    return 1;
}

/* Pass 1: shape, numeric columns and their values. */
static int scan(struct ufile *u, char *eb, size_t el)
{
    int rc;
    while ((rc = next_row(u, eb, el)) == 1) {
        for (uint32_t j = 1; j < u->ncols; j++) {
            struct column *c = &u->cols[j];
            double v;
            if (!c->numeric || u->cells[j].n == 0)
                continue;
            if (parse_number(&u->cells[j], &v)) {
                c->numeric = 0; /* categorical after all: its values are not needed */
                free(c->vals);
                c->vals = NULL;
                c->nvals = c->cap = 0;
            } else if (push_val(c, v)) {
                return rc_err(eb, el, RC_ENOMEM, "user features: out of memory");
            }
        }
    }
    if (rc)
        return rc;
    for (uint32_t j = 1; j < u->ncols; j++) {
        if (u->cols[j].numeric && u->cols[j].nvals == 0)
            u->cols[j].numeric = 0; /* an all-empty column: nothing to bucket */
        make_edges(&u->cols[j]);
    }
    return 0;
}

/* The file's features, per log user. */
struct fileset {
    uint8_t *listed;
    uint64_t *device;
    uint32_t *off, *n; /* tags in pool[off .. off + n) */
    uint64_t *pool;
    size_t npool, cap;
};

static int pool_push(struct fileset *fs, uint64_t h)
{
    if (fs->npool == fs->cap) {
        size_t nc = fs->cap ? fs->cap * 2 : 4096;
        uint64_t *p = realloc(fs->pool, nc * sizeof *p);
        if (!p)
            return RC_ENOMEM;
        fs->pool = p;
        fs->cap = nc;
    }
    fs->pool[fs->npool++] = h;
    return 0;
}

/* Tag "column=value" (or "column=q<bucket>") of one value. */
static int add_tag(struct fileset *fs, uint32_t u, const struct column *c, const char *v, size_t n)
{
    char buf[UF_NAME_MAX + 1 + UF_LINE_MAX / 16];
    double x;
    int len;
    struct cell cell = {(char *)v, n};
    if (fs->n[u] >= UF_MAX_TAGS)
        return 0;
    if (c->numeric && parse_number(&cell, &x) == 0)
        len = snprintf(buf, sizeof buf, "%s=q%u", c->name, bucket_of(c, x));
    else
        len = snprintf(buf, sizeof buf, "%s=%.*s", c->name,
                       (int)RC_MIN(n, sizeof buf - strlen(c->name) - 2), v);
    if (len <= 0)
        return 0;
    int rc = pool_push(fs, hash_str(buf, RC_MIN((size_t)len, sizeof buf - 1)));
    if (!rc)
        fs->n[u]++;
    return rc;
}

/* Pass 2: the features of the rows whose user the log has. */
static int assign(struct ufile *u, const rc_clicklog *log, struct fileset *fs, uint64_t *unknown,
                  char *eb, size_t el)
{
    int rc;
    while ((rc = next_row(u, eb, el)) == 1) {
        uint32_t user;
        if (rc_dict_find(log->users, u->cells[0].s, u->cells[0].n, &user) != 0) {
            (*unknown)++;
            continue;
        }
        /* A user listed twice: the last row wins. */
        fs->listed[user] = 1;
        fs->device[user] = 0;
        fs->off[user] = (uint32_t)fs->npool;
        fs->n[user] = 0;
        int err = 0;
        for (uint32_t j = 1; j < u->ncols && !err; j++) {
            const struct column *c = &u->cols[j];
            const struct cell *v = &u->cells[j];
            if (v->n == 0)
                continue;
            if (c->device) {
                fs->device[user] = hash_str(v->s, v->n);
                continue;
            }
            for (const char *p = v->s, *end = v->s + v->n; p < end && !err;) {
                const char *bar = memchr(p, '|', (size_t)(end - p));
                struct cell piece = {(char *)p, (size_t)((bar ? bar : end) - p)};
                trim_cell(&piece);
                if (piece.n)
                    err = add_tag(fs, user, c, piece.s, piece.n);
                p = bar ? bar + 1 : end;
            }
        }
        if (err)
            return rc_err(eb, el, RC_ENOMEM, "user features: out of memory");
    }
    return rc;
}

/* Rebuilds f with the file's features replacing the log's for listed users:
 * their tags always, their device when the file has a device column. */
static int merge(rc_ufeat *f, const struct fileset *fs, int has_device)
{
    size_t total = 0;
    for (uint32_t u = 0; u < f->nusers; u++)
        total += fs->listed[u] ? fs->n[u] : f->tag_off[u + 1] - f->tag_off[u];
    if (total > UINT32_MAX)
        return RC_E2BIG;
    uint64_t *tags = malloc((total ? total : 1) * sizeof *tags);
    uint32_t *off = malloc(((size_t)f->nusers + 1) * sizeof *off);
    if (!tags || !off) {
        free(tags);
        free(off);
        return RC_ENOMEM;
    }
    uint32_t w = 0;
    f->users_with_device = f->users_with_tags = 0;
    for (uint32_t u = 0; u < f->nusers; u++) {
        off[u] = w;
        if (fs->listed[u]) {
            if (has_device)
                f->device[u] = fs->device[u];
            memcpy(tags + w, fs->pool + fs->off[u], fs->n[u] * sizeof *tags);
            w += fs->n[u];
        } else {
            uint32_t n = f->tag_off[u + 1] - f->tag_off[u];
            memcpy(tags + w, f->tags + f->tag_off[u], n * sizeof *tags);
            w += n;
        }
        f->users_with_device += f->device[u] != 0;
        f->users_with_tags += off[u] != w;
    }
    off[f->nusers] = w;
    free(f->tags);
    free(f->tag_off);
    f->tags = tags;
    f->tag_off = off;
    return 0;
}

static void uf_close(struct ufile *u)
{
    if (u->fp)
        fclose(u->fp);
    u->fp = NULL;
}

int rc_ufeat_load_file(rc_ufeat *f, const rc_clicklog *log, const char *path,
                       uint64_t *unknown_users, char *eb, size_t el)
{
    struct ufile u = {0};
    struct fileset fs = {0};
    uint64_t unknown = 0;
    int rc, has_device = 0;
    if (!f || !log || !path)
        return rc_err(eb, el, RC_EINVAL, "user features: missing store, log or path");
    if (f->nusers != rc_dict_size(log->users))
        return rc_err(eb, el, RC_EINVAL, "user features: the store is not of this log");
    if (!(u.line = malloc(UF_LINE_MAX + 2)))
        return rc_err(eb, el, RC_ENOMEM, "user features: out of memory");
    if ((rc = uf_open(&u, path, eb, el)) || (rc = read_header(&u, eb, el)) ||
        (rc = scan(&u, eb, el)))
        goto out;
    uf_close(&u);
    if ((rc = uf_open(&u, path, eb, el)) || (rc = read_header(&u, eb, el)))
        goto out;
    fs.listed = calloc((size_t)f->nusers + 1, 1);
    fs.device = calloc((size_t)f->nusers + 1, sizeof *fs.device);
    fs.off = calloc((size_t)f->nusers + 1, sizeof *fs.off);
    fs.n = calloc((size_t)f->nusers + 1, sizeof *fs.n);
    if (!fs.listed || !fs.device || !fs.off || !fs.n) {
        rc = rc_err(eb, el, RC_ENOMEM, "user features: out of memory");
        goto out;
    }
    if ((rc = assign(&u, log, &fs, &unknown, eb, el)))
        goto out;
    for (uint32_t j = 1; j < u.ncols; j++)
        has_device |= u.cols[j].device;
    if ((rc = merge(f, &fs, has_device)))
        rc = rc_err(eb, el, rc, "user features %s: %s", path, rc_strerror(rc));
    if (unknown_users)
        *unknown_users = unknown;
out:
    uf_close(&u);
    for (uint32_t j = 0; u.cols && j < u.ncols; j++)
        free(u.cols[j].vals);
    free(u.cols);
    free(u.line);
    free(fs.listed);
    free(fs.device);
    free(fs.off);
    free(fs.n);
    free(fs.pool);
    return rc;
}
