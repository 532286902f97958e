/* cpus — see cpus.h. */
#include "recalld/cpus.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/common.h"

/* Parses a list "a,b-c" into s. 0 or RC_EINVAL. */
static int parse_list(const char *spec, cpu_set_t *s, char *eb, size_t el)
{
    CPU_ZERO(s);
    const char *p = spec;
    if (!*p)
        return rc_err(eb, el, RC_EINVAL, "an empty core list");
    while (*p) {
        char *end;
        if (!isdigit((unsigned char)*p))
            return rc_err(eb, el, RC_EINVAL, "expected a core number at \"%.20s\"", p);
        errno = 0;
        unsigned long a = strtoul(p, &end, 10), b = a;
        if (*end == '-') {
            if (!isdigit((unsigned char)end[1]))
                return rc_err(eb, el, RC_EINVAL, "expected a core number after '-' at \"%.20s\"",
                              end);
            b = strtoul(end + 1, &end, 10);
        }
        if (errno || a > b || b >= CPU_SETSIZE)
            return rc_err(eb, el, RC_EINVAL, "a range of cores must be a-b with a <= b < %d",
                          CPU_SETSIZE);
        for (unsigned long c = a; c <= b; c++)
            CPU_SET((int)c, s);
        if (*end == ',' && end[1])
            end++;
        else if (*end)
            return rc_err(eb, el, RC_EINVAL, "unexpected \"%.20s\" in a core list", end);
        p = end;
    }
    return 0;
}

int rc_cpus_check(const char *spec, char *eb, size_t el)
{
    cpu_set_t s;
    if (!spec || !*spec || !strcmp(spec, "auto"))
        return 0;
    return parse_list(spec, &s, eb, el);
}

int rc_cpus_plan(const char *spec, cpu_set_t *bg, cpu_set_t *rest, char *eb, size_t el)
{
    if (eb && el)
        eb[0] = '\0';
    if (!spec || !*spec)
        return 0;
    cpu_set_t all;
    CPU_ZERO(&all);
    if (sched_getaffinity(0, sizeof all, &all))
        return rc_err(eb, el, 0, "cannot read the allowed cores: %s", strerror(errno));
    int n = CPU_COUNT(&all);
    CPU_ZERO(bg);
    CPU_ZERO(rest);
    if (!strcmp(spec, "auto")) {
        if (n < 2)
            return rc_err(eb, el, 0, "one core allowed: nothing to split");
        int lower = n / 2, seen = 0; /* the request path gets floor(n/2) cores */
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &all)) {
                if (seen++ < lower)
                    CPU_SET(c, rest);
                else
                    CPU_SET(c, bg);
            }
        return 1;
    }
    cpu_set_t want;
    int rc = parse_list(spec, &want, eb, el);
    if (rc)
        return rc;
    CPU_AND(bg, &want, &all);
    CPU_XOR(rest, &all, bg); /* all minus bg (bg is a subset of all) */
    if (!CPU_COUNT(bg))
        return rc_err(eb, el, 0, "none of the cores \"%s\" is allowed to this process", spec);
    if (!CPU_COUNT(rest))
        return rc_err(eb, el, 0, "the cores \"%s\" leave none for the request path", spec);
    return 1;
}

void rc_cpus_format(const cpu_set_t *s, char *out, size_t cap)
{
    size_t len = 0;
    if (cap)
        out[0] = '\0';
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, s))
            continue;
        int e = c;
        while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, s))
            e++;
        int w =
            e > c ? snprintf(out + len, cap > len ? cap - len : 0, "%s%d-%d", len ? "," : "", c, e)
                  : snprintf(out + len, cap > len ? cap - len : 0, "%s%d", len ? "," : "", c);
        if (w < 0 || (size_t)w >= (cap > len ? cap - len : 0))
            return;
        len += (size_t)w;
        c = e;
    }
}
