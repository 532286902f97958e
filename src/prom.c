/* prom — the Prometheus text writer of the metrics module (metrics.h). */
#include "recalld/metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Shortest %g form that reads back as v. */
static void fmt_double(char *out, size_t cap, double v)
{
    if (isnan(v)) {
        snprintf(out, cap, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, cap, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        snprintf(out, cap, "%.0f", v);
        return;
    }
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(out, cap, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

static void put_escaped(rc_buf *b, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            rc_buf_puts(b, "\\\\");
        else if (*s == '\n')
            rc_buf_puts(b, "\\n");
        else if (quote && *s == '"')
            rc_buf_puts(b, "\\\"");
        else
            rc_buf_append(b, s, 1);
    }
}

void rc_prom_family(rc_buf *b, const char *name, const char *type, const char *help)
{
    rc_buf_printf(b, "# HELP %s ", name);
    put_escaped(b, help, 0);
    rc_buf_printf(b, "\n# TYPE %s %s\n", name, type);
}

static void sample_text(rc_buf *b, const char *name, const char *labels, const char *val)
{
    if (labels && labels[0])
        rc_buf_printf(b, "%s{%s} %s\n", name, labels, val);
    else
        rc_buf_printf(b, "%s %s\n", name, val);
}

void rc_prom_sample(rc_buf *b, const char *name, const char *labels, double v)
{
    char val[40];
    fmt_double(val, sizeof val, v);
    sample_text(b, name, labels, val);
}

void rc_prom_sample_u64(rc_buf *b, const char *name, const char *labels, uint64_t v)
{
    char val[24];
    snprintf(val, sizeof val, "%llu", (unsigned long long)v);
    sample_text(b, name, labels, val);
}

void rc_prom_label(rc_buf *labels, const char *name, const char *value)
{
    rc_buf_printf(labels, "%s%s=\"", labels->len ? "," : "", name);
    put_escaped(labels, value, 1);
    rc_buf_puts(labels, "\"");
}

/* v * h->scale, computed as a division when the scale is 1/N so that bounds
 * print as written (50 us -> 5e-05, not 4.9999999999999996e-05). */
static double scaled(const rc_hist_snap *h, double v)
{
    double inv = 1.0 / h->scale, r = round(inv);
    if (h->scale < 1 && fabs(inv - r) < 1e-9 * r)
        return v / r;
    return v * h->scale;
}

void rc_prom_hist_snap(rc_buf *b, const char *name, const char *labels, const rc_hist_snap *h)
{
    uint64_t cum = 0;
    char bname[160], lab[512], le[40];
    const char *sep = labels && labels[0] ? "," : "";
    snprintf(bname, sizeof bname, "%s_bucket", name);
    for (uint32_t i = 0; i <= h->nb; i++) {
        cum += h->n[i];
        if (i < h->nb)
            fmt_double(le, sizeof le, scaled(h, (double)h->le[i]));
        else
            snprintf(le, sizeof le, "+Inf");
        snprintf(lab, sizeof lab, "%s%sle=\"%s\"", labels ? labels : "", sep, le);
        rc_prom_sample_u64(b, bname, lab, cum);
    }
    snprintf(bname, sizeof bname, "%s_sum", name);
    rc_prom_sample(b, bname, labels, scaled(h, (double)h->sum));
    snprintf(bname, sizeof bname, "%s_count", name);
    rc_prom_sample_u64(b, bname, labels, cum);
}

void rc_prom_hist(rc_buf *b, const char *name, const char *labels, const rc_hist *h)
{
    rc_hist_snap snap;
    rc_hist_snapshot(h, &snap);
    rc_prom_hist_snap(b, name, labels, &snap);
}
