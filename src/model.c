#include "recalld/model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recalld/common.h"

#define MAGIC   "RCMODEL1"
#define VERSION 1u

/* ---- CRC-32C: SSE4.2 instruction when present, table otherwise ---- */

static uint32_t crc_table[256];

static void crc_init_table(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc_sw(uint32_t crc, const unsigned char *p, size_t n)
{
    if (!crc_table[1])
        crc_init_table();
    while (n--)
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const unsigned char *p,
                                                         size_t n)
{
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }
    crc = (uint32_t)c;
    while (n--)
        crc = __builtin_ia32_crc32qi(crc, *p++);
    return crc;
}

uint32_t rc_crc32c(uint32_t crc, const void *buf, size_t n)
{
    static int hw = -1;
    if (hw < 0)
        hw = __builtin_cpu_supports("sse4.2");
    crc = ~crc;
    crc = hw ? crc_hw(crc, buf, n) : crc_sw(crc, buf, n);
    return ~crc;
}

/* ---- writing ---- */

typedef struct wr {
    FILE *f;
    uint32_t crc;
    int err;
} wr;

static void put(wr *w, const void *p, size_t n)
{
    if (w->err || n == 0)
        return;
    w->crc = rc_crc32c(w->crc, p, n);
    if (fwrite(p, 1, n, w->f) != n)
        w->err = errno ? errno : EIO;
}

static void put_u16(wr *w, uint16_t v) { put(w, &v, 2); }
static void put_u32(wr *w, uint32_t v) { put(w, &v, 4); }
static void put_u64(wr *w, uint64_t v) { put(w, &v, 8); }

static void put_names(wr *w, const rc_table *t, uint32_t n,
                      const char *(*name)(const rc_table *, uint32_t))
{
    for (uint32_t i = 0; i < n; i++) {
        const char *s = name(t, i);
        size_t len = s ? strlen(s) : 0;
        put_u16(w, (uint16_t)len);
        put(w, s, len);
    }
}

int rc_model_save(const rc_table *t, const char *path, char *eb, size_t el)
{
    char tmp[4096];
    uint32_t rows = rc_table_size(t), dim = rc_table_dim(t);
    uint32_t nc = rc_table_ncities(t), nk = rc_table_ncates(t);
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return rc_err(eb, el, RC_EINVAL, "model %s: path too long", path);
    wr w = {.f = fopen(tmp, "wb")};
    if (!w.f)
        return rc_err(eb, el, RC_EIO, "model %s: %s", tmp, strerror(errno));
    put(&w, MAGIC, 8);
    put_u32(&w, VERSION);
    put_u32(&w, dim);
    put_u64(&w, rows);
    put_u32(&w, nc);
    put_u32(&w, nk);
    put_names(&w, t, nc, rc_table_city_name);
    put_names(&w, t, nk, rc_table_cate_name);
    for (uint32_t r = 0; r < rows; r++) {
        size_t len;
        const char *id = rc_table_item_id(t, r, &len);
        put_u16(&w, (uint16_t)len);
        put(&w, id, len);
        put_u32(&w, rc_table_city(t, r));
        put_u32(&w, rc_table_cate(t, r));
        put_u32(&w, rc_table_count(t, r));
    }
    for (uint32_t r = 0; r < rows; r++)
        put(&w, rc_table_in(t, r), dim * sizeof(float));
    for (uint32_t r = 0; r < rows; r++)
        put(&w, rc_table_out(t, r), dim * sizeof(float));
    uint32_t crc = w.crc;
    put(&w, &crc, 4);
    if (!w.err && (fflush(w.f) || fsync(fileno(w.f))))
        w.err = errno;
    if (fclose(w.f) && !w.err)
        w.err = errno;
    if (!w.err && rename(tmp, path))
        w.err = errno;
    if (w.err) {
        unlink(tmp);
        return rc_err(eb, el, RC_EIO, "model %s: %s", path, strerror(w.err));
    }
    return 0;
}

/* ---- reading ----
 * The file is read through a window of RD_WINDOW bytes, its checksum taken
 * on the way, not into one buffer of its size: a 1M-item model is ~460 MB,
 * which install_model would otherwise hold twice (the file and the table
 * built from it) beside the live table. Its trailing checksum is checked
 * once the contents are read; a file whose checksum fails is refused as
 * such even when its contents failed to parse first (the rest is read for
 * the checksum), so the errors are those of a whole-file check. */

/* At least the largest take: a row record (65535 + 12), a vector. A pointer
 * take returns is valid until the next take. */
#define RD_WINDOW (1u << 20)

typedef struct rd {
    FILE *f;
    unsigned char *buf;
    size_t pos, lim; /* unread bytes buf[pos, lim) */
    uint64_t left;   /* bytes of the contents (the file less its checksum) not yet in buf */
    uint32_t crc;    /* of every byte read into buf */
    int short_read;  /* a take past the contents' end */
    int io_err;      /* the file ended early or a read failed */
} rd;

/* Moves the unread bytes to the front and reads up to the window's end. */
static void refill(rd *r)
{
    size_t have = r->lim - r->pos;
    memmove(r->buf, r->buf + r->pos, have);
    r->pos = 0;
    r->lim = have;
    size_t want = RD_WINDOW - have;
    if (want > r->left)
        want = (size_t)r->left;
    if (!want)
        return;
    size_t got = fread(r->buf + have, 1, want, r->f);
    r->crc = rc_crc32c(r->crc, r->buf + have, got);
    r->lim += got;
    r->left -= got;
    if (got < want) {
        r->io_err = 1;
        r->left = 0;
    }
}

static const void *take(rd *r, size_t n)
{
    if (r->lim - r->pos < n && n <= RD_WINDOW)
        refill(r);
    if (r->lim - r->pos < n) {
        r->short_read = 1;
        return NULL;
    }
    const void *q = r->buf + r->pos;
    r->pos += n;
    return q;
}

/* Every byte of the contents was taken. */
static int rd_at_end(const rd *r) { return r->pos == r->lim && r->left == 0; }

static uint32_t get_u32(rd *r)
{
    uint32_t v = 0;
    const void *q = take(r, 4);
    if (q)
        memcpy(&v, q, 4);
    return v;
}

static uint16_t get_u16(rd *r)
{
    uint16_t v = 0;
    const void *q = take(r, 2);
    if (q)
        memcpy(&v, q, 2);
    return v;
}

/* Interns the n names of one section (cities or categories) in order, so
 * that the file's ids equal the table's. */
static int load_names(rd *r, rc_table *t, uint32_t n, int city)
{
    for (uint32_t i = 0; i < n; i++) {
        uint16_t len = get_u16(r);
        const char *s = take(r, len);
        uint32_t id;
        if (!s)
            return RC_ECORRUPT;
        int rc = city ? rc_table_city_id(t, s, len, &id) : rc_table_cate_id(t, s, len, &id);
        if (rc || id != i)
            return RC_ECORRUPT;
    }
    return 0;
}

static int load_rows(rd *r, rc_table *t, uint64_t rows, uint32_t nc, uint32_t nk)
{
    for (uint64_t i = 0; i < rows; i++) {
        uint16_t len = get_u16(r);
        /* one take for the whole record: a later take may refill the window
         * and overwrite an id taken before it */
        const unsigned char *rec = take(r, (size_t)len + 12);
        uint32_t city, cate, count, row;
        int created = 0;
        if (!rec || r->short_read || len == 0)
            return RC_ECORRUPT;
        const char *id = (const char *)rec;
        memcpy(&city, rec + len, 4);
        memcpy(&cate, rec + len + 4, 4);
        memcpy(&count, rec + len + 8, 4);
        if (city >= nc || cate >= nk)
            return RC_ECORRUPT;
        int rc = rc_table_upsert(t, id, len, city, cate, NULL, 0, &row, &created);
        if (rc)
            return rc;
        if (!created || row != i)
            return RC_ECORRUPT; /* duplicate id */
        rc_table_count_add(t, row, count);
    }
    return 0;
}

static int parse(rd *r, const rc_table_opts *opts, rc_table **out, const char *path, char *eb,
                 size_t el)
{
    const char *magic = take(r, 8);
    if (!magic || memcmp(magic, MAGIC, 8))
        return rc_err(eb, el, RC_ECORRUPT, "model %s: not a recalld model file (bad magic)", path);
    uint32_t version = get_u32(r), dim = get_u32(r);
    uint64_t rows = get_u32(r);
    rows |= (uint64_t)get_u32(r) << 32;
    uint32_t nc = get_u32(r), nk = get_u32(r);
    if (version != VERSION)
        return rc_err(eb, el, RC_ECORRUPT, "model %s: format version %u, this build reads %u", path,
                      version, VERSION);
    if (dim == 0) /* the table would pick its default dimension and read no vector */
        return rc_err(eb, el, RC_ECORRUPT, "model %s: dimension 0", path);
    if (opts && opts->dim && opts->dim != dim)
        return rc_err(eb, el, RC_EINVAL, "model %s: dimension %u, configured model.dim is %u", path,
                      dim, opts->dim);
    rc_table_opts to = opts ? *opts : (rc_table_opts){0};
    to.dim = dim;
    if (to.max_items && rows > to.max_items)
        return rc_err(eb, el, RC_EINVAL, "model %s: %llu items exceed model.max_items %u", path,
                      (unsigned long long)rows, to.max_items);
    rc_table *t = NULL;
    int rc = rc_table_create(&to, &t, eb, el);
    if (rc)
        return rc;
    if ((rc = load_names(r, t, nc, 1)) || (rc = load_names(r, t, nk, 0)) ||
        (rc = load_rows(r, t, rows, nc, nk)))
        goto bad;
    for (int side = 0; side < 2; side++)
        for (uint64_t i = 0; i < rows; i++) {
            const void *v = take(r, dim * sizeof(float));
            if (!v) {
                rc = RC_ECORRUPT;
                goto bad;
            }
            memcpy(side ? rc_table_out(t, (uint32_t)i) : rc_table_in(t, (uint32_t)i), v,
                   dim * sizeof(float));
        }
    if (!rd_at_end(r)) {
        rc = RC_ECORRUPT;
        goto bad;
    }
    *out = t;
    return 0;
bad:
    rc_table_destroy(t);
    if (rc == RC_ECORRUPT)
        return rc_err(eb, el, rc, "model %s: inconsistent contents", path);
    return rc_err(eb, el, rc, "model %s: %s", path, rc_strerror(rc));
}

int rc_model_load(const char *path, const rc_table_opts *opts, rc_table **out, char *eb, size_t el)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return rc_err(eb, el, errno == ENOENT ? RC_ENOENT : RC_EIO, "model %s: %s", path,
                      strerror(errno));
    long len = -1;
    if (fseek(f, 0, SEEK_END) || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
        fclose(f);
        return rc_err(eb, el, RC_EIO, "model %s: cannot size the file", path);
    }
    if (len < 8 + 4 + 4 + 8 + 8 + 4) {
        fclose(f);
        return rc_err(eb, el, RC_ECORRUPT, "model %s: truncated (%ld bytes)", path, len);
    }
    rd r = {.f = f, .left = (uint64_t)len - 4, .buf = malloc(RD_WINDOW)};
    if (!r.buf) {
        fclose(f);
        return rc_err(eb, el, RC_ENOMEM, "model %s: out of memory", path);
    }
    char perr[512] = "";
    int rc = parse(&r, opts, out, path, perr, sizeof perr);
    /* the checksum covers every byte: read what parsing left */
    while (!r.io_err && r.left) {
        r.pos = r.lim;
        refill(&r);
    }
    uint32_t want = 0;
    int ok = !r.io_err && fread(&want, 1, 4, f) == 4 && fgetc(f) == EOF && want == r.crc;
    fclose(f);
    free(r.buf);
    if (!ok) {
        rc_table_destroy(*out);
        *out = NULL;
        return rc_err(eb, el, RC_ECORRUPT, "model %s: checksum mismatch (truncated or corrupt)",
                      path);
    }
    if (rc)
        return rc_err(eb, el, rc, "%s", perr);
    return 0;
}
