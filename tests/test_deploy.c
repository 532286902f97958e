/* Static checks of deploy/: the compose file, the Kubernetes manifests, the systemd unit,
 * the Dockerfile and the scripts cannot run on the build machine (no container engine,
 * no cluster), so they are parsed here and checked against the real programs: every
 * `--flag` given to recalld, recallctl, recalld-gen or recalld-broker must appear in that
 * program's --help; configs must load and validate; image, ports, volumes and probes must
 * agree between the files. The image itself is built and smoke-tested by hand with
 * deploy/build-image.sh.
 *
 * YAML: a small indentation-aware reader for the subset these files use (block mappings
 * and sequences, "- key: v" items, quoted and plain scalars, one-line or multi-line flow
 * sequences of scalars, `|` and `>` block scalars, comments). Anything else is an error,
 * so a file that outgrows the reader fails loudly instead of being half-checked. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "e2e.h"
#include "recalld/common.h"
#include "recalld/config.h"
#include "test.h"

#define DEPLOY RC_SOURCE_DIR "/deploy/"
#define IMAGE  "localhost/recalld:latest"

/* ---- small helpers ---- */

static int path_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static char *dup_range(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    ASSERT(d != NULL);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* ---- YAML subset reader ---- */

enum ykind { Y_NULL, Y_STR, Y_MAP, Y_SEQ };

typedef struct ynode ynode;
struct ynode {
    enum ykind kind;
    char *key; /* set when the node is a mapping value */
    char *str; /* Y_STR */
    ynode **kid;
    size_t n, cap;
    int line;
};

typedef struct yparser {
    char **raw; /* the file's lines, owned */
    size_t n, i;
    const char *file;
    char err[512];
} yparser;

static ynode *ynew(enum ykind k, int line)
{
    ynode *y = calloc(1, sizeof *y);
    ASSERT(y != NULL);
    y->kind = k;
    y->line = line;
    return y;
}

static void yadd(ynode *parent, ynode *kid)
{
    if (parent->n == parent->cap) {
        parent->cap = parent->cap ? parent->cap * 2 : 8;
        parent->kid = realloc(parent->kid, parent->cap * sizeof *parent->kid);
        ASSERT(parent->kid != NULL);
    }
    parent->kid[parent->n++] = kid;
}

static void yfree(ynode *y)
{
    if (!y)
        return;
    for (size_t i = 0; i < y->n; i++)
        yfree(y->kid[i]);
    free(y->kid);
    free(y->key);
    free(y->str);
    free(y);
}

static void yfail(yparser *p, const char *why)
{
    if (!p->err[0])
        snprintf(p->err, sizeof p->err, "%s:%zu: %s: \"%s\"", p->file, p->i + 1, why,
                 p->i < p->n ? p->raw[p->i] : "(end)");
    p->i = p->n;
}

static int indent_of(const char *s)
{
    int n = 0;
    while (s[n] == ' ')
        n++;
    return n;
}

/* Length of s without a trailing comment (a '#' at the start or after a blank, outside
 * quotes) and without trailing blanks. */
static size_t content_len(const char *s)
{
    char q = 0;
    size_t end = 0;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        if (q) {
            if (c == q)
                q = 0;
            else if (c == '\\' && q == '"' && s[i + 1])
                i++;
        } else if (c == '"' || c == '\'') {
            q = c;
        } else if (c == '#' && (i == 0 || s[i - 1] == ' ' || s[i - 1] == '\t')) {
            break;
        }
        end = i + 1;
    }
    while (end > 0 && (s[end - 1] == ' ' || s[end - 1] == '\t' || s[end - 1] == '\r'))
        end--;
    return end;
}

/* Advances past blank and comment-only lines; 1 if a line remains. */
static int ynext(yparser *p)
{
    while (p->i < p->n && content_len(p->raw[p->i]) <= (size_t)indent_of(p->raw[p->i]))
        p->i++;
    return p->i < p->n;
}

static char *unquote(yparser *p, const char *s, size_t n)
{
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        char *d = malloc(n), *o = d;
        ASSERT(d != NULL);
        for (size_t i = 1; i + 1 < n; i++) {
            if (s[i] == '\\' && i + 2 < n) {
                i++;
                *o++ = s[i] == 'n' ? '\n' : s[i] == 't' ? '\t' : s[i];
            } else {
                *o++ = s[i];
            }
        }
        *o = '\0';
        return d;
    }
    if (n >= 2 && s[0] == '\'' && s[n - 1] == '\'') {
        char *d = malloc(n), *o = d;
        ASSERT(d != NULL);
        for (size_t i = 1; i + 1 < n; i++) {
            *o++ = s[i];
            if (s[i] == '\'' && s[i + 1] == '\'')
                i++;
        }
        *o = '\0';
        return d;
    }
    if (n && (s[0] == '"' || s[0] == '\'' || s[0] == '&' || s[0] == '*' || s[0] == '!' ||
              s[0] == '{' || s[0] == '@' || s[0] == '`')) {
        yfail(p, "unsupported or unterminated scalar");
        return dup_range("", 0);
    }
    return dup_range(s, n);
}

/* Offset of the ':' that ends a mapping key ("key: v" or "key:"), or -1. */
static long key_colon(const char *s, size_t n)
{
    char q = 0;
    for (size_t i = 0; i < n; i++) {
        if (q) {
            if (s[i] == q)
                q = 0;
        } else if ((s[i] == '"' || s[i] == '\'') && i == 0) {
            q = s[i];
        } else if (s[i] == ':' && (i + 1 == n || s[i + 1] == ' ')) {
            return (long)i;
        } else if (s[i] == '[' || s[i] == '{') {
            return -1;
        }
    }
    return -1;
}

static ynode *yblock(yparser *p, int ind);

/* `|` or `>` block scalar whose header is on line p->i, under a parent at parent_ind. */
static ynode *yblock_scalar(yparser *p, const char *hdr, int parent_ind)
{
    ynode *y = ynew(Y_STR, (int)p->i + 1);
    char style = hdr[0], chomp = hdr[1];
    if ((chomp && chomp != '-' && chomp != '+') || (chomp && hdr[2]))
        yfail(p, "unsupported block scalar header");
    size_t first = ++p->i, last = first;
    int bind = -1;
    while (p->i < p->n) {
        const char *l = p->raw[p->i];
        int blank = l[indent_of(l)] == '\0';
        if (!blank && indent_of(l) <= parent_ind)
            break;
        if (!blank && bind < 0)
            bind = indent_of(l);
        if (!blank)
            last = p->i + 1;
        p->i++;
    }
    p->i = last > first ? last : first;
    size_t cap = 1;
    for (size_t i = first; i < last; i++)
        cap += strlen(p->raw[i]) + 1;
    char *s = malloc(cap), *o = s;
    ASSERT(s != NULL);
    for (size_t i = first; i < last; i++) {
        const char *l = p->raw[i];
        const char *t = (int)strlen(l) > bind ? l + bind : "";
        if (i > first)
            *o++ = (style == '>' && *t && l[indent_of(l)]) ? ' ' : '\n';
        size_t tl = strlen(t);
        memcpy(o, t, tl);
        o += tl;
    }
    if (chomp != '-' && last > first)
        *o++ = '\n';
    *o = '\0';
    y->str = s;
    return y;
}

/* `[a, "b", 'c']`, possibly continued on the following lines. */
static ynode *yflow_seq(yparser *p, const char *val, size_t vn)
{
    ynode *y = ynew(Y_SEQ, (int)p->i + 1);
    size_t cap = vn + 1, len = vn;
    char *t = malloc(cap);
    ASSERT(t != NULL);
    memcpy(t, val, vn);
    t[len] = '\0';
    for (;;) {
        int depth = 0;
        char q = 0;
        for (size_t i = 0; i < len; i++) {
            if (q)
                q = t[i] == q ? 0 : q;
            else if (t[i] == '"' || t[i] == '\'')
                q = t[i];
            else
                depth += t[i] == '[' ? 1 : t[i] == ']' ? -1 : 0;
        }
        p->i++;
        if (depth == 0)
            break;
        if (!ynext(p)) {
            yfail(p, "unterminated flow sequence");
            break;
        }
        const char *l = p->raw[p->i] + indent_of(p->raw[p->i]);
        size_t ln = content_len(l);
        t = realloc(t, cap += ln + 1);
        t[len++] = ' ';
        memcpy(t + len, l, ln);
        t[len += ln] = '\0';
    }
    if (len < 2 || t[0] != '[' || t[len - 1] != ']') {
        yfail(p, "flow sequence must stand alone");
        free(t);
        return y;
    }
    size_t i = 1;
    while (i < len - 1) {
        while (t[i] == ' ')
            i++;
        if (i >= len - 1)
            break;
        size_t s = i;
        char q = 0;
        while (i < len - 1 && (q || t[i] != ',')) {
            if (q)
                q = t[i] == q ? 0 : q;
            else if (t[i] == '"' || t[i] == '\'')
                q = t[i];
            else if (t[i] == '[' || t[i] == '{')
                yfail(p, "nested flow collections are not supported");
            i++;
        }
        size_t e = i;
        while (e > s && t[e - 1] == ' ')
            e--;
        ynode *k = ynew(Y_STR, y->line);
        k->str = unquote(p, t + s, e - s);
        yadd(y, k);
        i++;
    }
    free(t);
    return y;
}

/* A value that starts on line p->i (after "key:" or "- "); consumes its lines. */
static ynode *yinline(yparser *p, const char *val, size_t vn, int parent_ind)
{
    if (val[0] == '|' || val[0] == '>') {
        char hdr[8];
        snprintf(hdr, sizeof hdr, "%.*s", (int)(vn < 7 ? vn : 7), val);
        return yblock_scalar(p, hdr, parent_ind);
    }
    if (val[0] == '[')
        return yflow_seq(p, val, vn);
    ynode *y = ynew(Y_STR, (int)p->i + 1);
    if (vn == 2 && !memcmp(val, "{}", 2)) {
        y->kind = Y_MAP;
        p->i++;
        return y;
    }
    y->str = unquote(p, val, vn);
    p->i++;
    return y;
}

/* The value of "key:" or "-" with nothing after it: the more indented block below, a
 * sequence at the same indent (mappings only), or null. */
static ynode *yafter_empty(yparser *p, int ind, int in_map)
{
    p->i++;
    if (ynext(p)) {
        const char *l = p->raw[p->i];
        int li = indent_of(l);
        if (li > ind || (in_map && li == ind && l[li] == '-' && (l[li + 1] == ' ' || !l[li + 1])))
            return yblock(p, li);
    }
    return ynew(Y_NULL, (int)p->i);
}

static ynode *yseq(yparser *p, int ind)
{
    ynode *y = ynew(Y_SEQ, (int)p->i + 1);
    while (ynext(p) && indent_of(p->raw[p->i]) == ind) {
        char *l = p->raw[p->i];
        if (l[ind] != '-' || (l[ind + 1] != ' ' && l[ind + 1] != '\0'))
            break;
        int col = ind + 1;
        while (l[col] == ' ')
            col++;
        size_t vn = content_len(l + col);
        if (vn == 0) {
            yadd(y, yafter_empty(p, ind, 0));
        } else if (key_colon(l + col, vn) >= 0 || (l[col] == '-' && l[col + 1] == ' ')) {
            /* "- key: v" / "- - x": the item is a block that starts at column col. */
            memset(l + ind, ' ', (size_t)(col - ind));
            yadd(y, yblock(p, col));
        } else {
            yadd(y, yinline(p, l + col, vn, ind));
        }
    }
    return y;
}

static ynode *ymap(yparser *p, int ind)
{
    ynode *y = ynew(Y_MAP, (int)p->i + 1);
    while (ynext(p) && indent_of(p->raw[p->i]) == ind) {
        const char *c = p->raw[p->i] + ind;
        size_t cn = content_len(c);
        if (c[0] == '-' && (c[1] == ' ' || c[1] == '\0'))
            break;
        long colon = key_colon(c, cn);
        if (colon <= 0) {
            yfail(p, "expected \"key: value\"");
            break;
        }
        char *key = unquote(p, c, (size_t)colon);
        for (size_t i = 0; i < y->n; i++)
            if (!strcmp(y->kid[i]->key, key))
                yfail(p, "duplicate key");
        size_t vs = (size_t)colon + 1;
        while (vs < cn && c[vs] == ' ')
            vs++;
        ynode *v = vs >= cn ? yafter_empty(p, ind, 1) : yinline(p, c + vs, cn - vs, ind);
        v->key = key;
        yadd(y, v);
    }
    return y;
}

static ynode *yblock(yparser *p, int ind)
{
    const char *c = p->raw[p->i] + ind;
    if (c[0] == '-' && (c[1] == ' ' || c[1] == '\0'))
        return yseq(p, ind);
    return ymap(p, ind);
}

/* Parses text (one YAML document); NULL and *err set on error. */
static ynode *yparse(const char *text, const char *file, char *err, size_t errlen)
{
    yparser p = {.file = file};
    size_t cap = 64;
    p.raw = malloc(cap * sizeof *p.raw);
    ASSERT(p.raw != NULL);
    for (const char *s = text; *s;) {
        const char *e = strchr(s, '\n');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (p.n == cap)
            p.raw = realloc(p.raw, (cap *= 2) * sizeof *p.raw);
        p.raw[p.n++] = dup_range(s, n);
        s += n + (e != NULL);
    }
    ynode *root = NULL;
    for (size_t i = 0; i < p.n && !p.err[0]; i++) {
        p.i = i;
        if (strchr(p.raw[i], '\t') && p.raw[i][indent_of(p.raw[i])] == '\t')
            yfail(&p, "tab indentation");
        else if (!strncmp(p.raw[i], "---", 3) || !strncmp(p.raw[i], "...", 3))
            yfail(&p, "multi-document streams are not supported");
    }
    p.i = 0;
    if (!p.err[0] && ynext(&p)) {
        if (indent_of(p.raw[p.i]) != 0)
            yfail(&p, "document must start at column 0");
        else
            root = yblock(&p, 0);
        if (ynext(&p))
            yfail(&p, "unexpected indentation");
    }
    for (size_t i = 0; i < p.n; i++)
        free(p.raw[i]);
    free(p.raw);
    if (p.err[0]) {
        snprintf(err, errlen, "%s", p.err);
        yfree(root);
        return NULL;
    }
    return root ? root : ynew(Y_NULL, 0);
}

static ynode *yparse_file(const char *path)
{
    char *text = e2e_read_file(path), err[600];
    ynode *y = yparse(text, path, err, sizeof err);
    free(text);
    if (!y)
        RC__FAIL("%s", err);
    return y;
}

/* Child by '/'-separated path of mapping keys and sequence indexes; NULL if absent. */
static ynode *yget(ynode *y, const char *path)
{
    char part[256];
    while (y && *path) {
        size_t n = strcspn(path, "/");
        snprintf(part, sizeof part, "%.*s", (int)n, path);
        path += n + (path[n] == '/');
        ynode *next = NULL;
        if (y->kind == Y_MAP) {
            for (size_t i = 0; i < y->n && !next; i++)
                if (!strcmp(y->kid[i]->key, part))
                    next = y->kid[i];
        } else if (y->kind == Y_SEQ && isdigit((unsigned char)part[0])) {
            size_t k = strtoul(part, NULL, 10);
            next = k < y->n ? y->kid[k] : NULL;
        }
        y = next;
    }
    return y;
}

static const char *ystr(ynode *y, const char *path)
{
    ynode *v = yget(y, path);
    return v && v->kind == Y_STR ? v->str : NULL;
}

static const char *ystr_req(ynode *y, const char *path)
{
    const char *s = ystr(y, path);
    if (!s)
        RC__FAIL("missing string at %s", path);
    return s;
}

/* Sequence item whose "name" is name. */
static ynode *yby_name(ynode *seq, const char *name)
{
    for (size_t i = 0; seq && seq->kind == Y_SEQ && i < seq->n; i++) {
        const char *n = ystr(seq->kid[i], "name");
        if (n && !strcmp(n, name))
            return seq->kid[i];
    }
    return NULL;
}

/* ---- flags against --help ---- */

typedef struct prog {
    const char *name;
    char *help;
} prog;

typedef struct flagcheck {
    prog progs[4];
    int checked; /* flags found and matched */
    char bad[2048];
} flagcheck;

static void flags_init(flagcheck *fc)
{
    static const char *names[] = {"recalld", "recallctl", "recalld-gen", "recalld-broker"};
    memset(fc, 0, sizeof *fc);
    for (int i = 0; i < 4; i++) {
        fc->progs[i].name = names[i];
        e2e_sh(&fc->progs[i].help, "'%s/%s' --help 2>&1", RC_BUILD_DIR, names[i]);
        if (!strstr(fc->progs[i].help, "usage"))
            RC__FAIL("%s --help printed no usage: %s", names[i], fc->progs[i].help);
    }
}

static void flags_free(flagcheck *fc)
{
    for (int i = 0; i < 4; i++)
        free(fc->progs[i].help);
}

static prog *find_prog(flagcheck *fc, const char *tok, size_t n)
{
    const char *slash = memrchr(tok, '/', n);
    if (slash) {
        n -= (size_t)(slash + 1 - tok);
        tok = slash + 1;
    }
    for (int i = 0; i < 4; i++)
        if (strlen(fc->progs[i].name) == n && !memcmp(fc->progs[i].name, tok, n))
            return &fc->progs[i];
    return NULL;
}

/* 1 if "--flag" appears in the help text as a whole word. */
static int help_has(const char *help, const char *flag, size_t n)
{
    for (const char *h = strstr(help, flag); h; h = strstr(h + 1, flag)) {
        int before_ok = h == help || !(isalnum((unsigned char)h[-1]) || h[-1] == '-');
        int after_ok = !(isalnum((unsigned char)h[n]) || h[n] == '-' || h[n] == '_');
        if (before_ok && after_ok)
            return 1;
    }
    return 0;
}

static void check_flag(flagcheck *fc, const prog *pg, const char *tok, size_t n, const char *where)
{
    size_t fl = strcspn(tok, "=");
    if (fl > n)
        fl = n;
    char flag[128];
    snprintf(flag, sizeof flag, "%.*s", (int)fl, tok);
    if (fl <= 2 || help_has(pg->help, flag, strlen(flag))) {
        fc->checked += fl > 2;
        return;
    }
    size_t used = strlen(fc->bad);
    snprintf(fc->bad + used, sizeof fc->bad - used, "  %s: %s %s (not in its --help)\n", where,
             pg->name, flag);
}

/* Words after which the next word is a command. */
static int starts_command(const char *t, size_t n)
{
    static const char *w[] = {
        "&&", "||", ";", "|",  "then", "do",  "else",      "exec",       "time", "sudo", "!",
        "{",  "(",  "#", "-c", "CMD",  "RUN", "CMD-SHELL", "ENTRYPOINT", "-",    "$",    "xargs"};
    for (size_t i = 0; i < RC_ARRAY_LEN(w); i++)
        if (strlen(w[i]) == n && !memcmp(w[i], t, n))
            return 1;
    return n > 1 && t[n - 1] == ':'; /* a YAML key: "command:", "test:" */
}

/* Scans shell-like text: a word in command position naming one of the programs (also
 * after "KEY=", "$(" or a path) starts its arguments; every "--flag" among them must be
 * in its --help. Newlines end a command unless escaped; so do ; | & ) and `. */
static void scan_text(flagcheck *fc, const char *text, const char *where)
{
    prog *cur = NULL;
    int cmdpos = 1;
    const char *s = text;
    while (*s) {
        if (*s == '\\' && s[1] == '\n') {
            s += 2;
            continue;
        }
        if (*s == '\n') {
            cur = NULL;
            cmdpos = 1;
            s++;
            continue;
        }
        if (isspace((unsigned char)*s)) {
            s++;
            continue;
        }
        const char *raw = s;
        while (*s && !isspace((unsigned char)*s))
            s++;
        size_t rawn = (size_t)(s - raw), n = rawn;
        const char *t = raw;
        for (size_t i = 0; i + 1 < rawn; i++) {
            if (raw[i] == '$' && raw[i + 1] == '(') { /* $(cmd: a command starts */
                t = raw + i + 2;
                n = rawn - i - 2;
                cmdpos = 1;
            }
        }
        while (n && strchr("\"'[{(`", *t))
            t++, n--;
        while (n && strchr("\"',;)]}`", t[n - 1]))
            n--;
        int assign = 0;
        const char *eq = n ? memchr(t, '=', n) : NULL;
        if (cmdpos && eq && eq > t && t[0] != '-' && !memchr(t, '/', (size_t)(eq - t))) {
            n -= (size_t)(eq + 1 - t); /* KEY=VALUE: systemd's Exec*=, sh's VAR=x cmd */
            t = eq + 1;
            assign = 1;
        }
        prog *pg = n ? find_prog(fc, t, n) : NULL;
        if (cmdpos)
            cur = pg;
        else if (cur && n > 2 && t[0] == '-' && t[1] == '-')
            check_flag(fc, cur, t, n, where);
        cmdpos = starts_command(t, n) || (cmdpos && !n) || (assign && !pg);
        for (size_t i = 0; i < rawn; i++) {
            if (strchr(";|&)`", raw[i])) { /* the command ends with this word */
                cur = NULL;
                cmdpos = 1;
            }
        }
    }
}

/* argv-style list (compose command/entrypoint, k8s command/args, probe exec). implicit is
 * the program run when the list holds only arguments (the image's entrypoint). */
static void scan_argv(flagcheck *fc, ynode *seq, prog *implicit, const char *where)
{
    if (!seq)
        return;
    ASSERT(seq->kind == Y_SEQ);
    size_t i = 0, n = seq->n;
    for (size_t j = 0; j < n; j++)
        ASSERT(seq->kid[j]->kind == Y_STR);
    if (n && !strcmp(seq->kid[0]->str, "CMD-SHELL")) {
        for (size_t j = 1; j < n; j++)
            scan_text(fc, seq->kid[j]->str, where);
        return;
    }
    if (n && !strcmp(seq->kid[0]->str, "CMD"))
        i++;
    if (i + 1 < n && !strcmp(seq->kid[i + 1]->str, "-c") &&
        (!strcmp(seq->kid[i]->str, "/bin/sh") || !strcmp(seq->kid[i]->str, "sh") ||
         !strcmp(seq->kid[i]->str, "/bin/bash"))) {
        for (size_t j = i + 2; j < n; j++)
            scan_text(fc, seq->kid[j]->str, where);
        return;
    }
    prog *cur = implicit;
    if (i < n && seq->kid[i]->str[0] != '-') {
        prog *pg = find_prog(fc, seq->kid[i]->str, strlen(seq->kid[i]->str));
        if (pg || !implicit) {
            cur = pg; /* a program of ours, or another one whose flags are not checked */
            i++;
        }
    }
    for (; cur && i < n; i++) {
        const char *a = seq->kid[i]->str;
        if (a[0] == '-' && a[1] == '-' && a[2])
            check_flag(fc, cur, a, strlen(a), where);
    }
}

static void scan_file(flagcheck *fc, const char *path)
{
    char *t = e2e_read_file(path);
    scan_text(fc, t, path);
    free(t);
}

/* ---- config checks ---- */

static void load_config_str(const char *json, const char *what, rc_config *c)
{
    char err[512] = "";
    rc_config_defaults(c);
    if (rc_config_load_str(c, json, err, sizeof err) || rc_config_validate(c, err, sizeof err))
        RC__FAIL("%s: %s", what, err);
}

/* ---- tests ---- */

TEST(deploy_yaml_reader)
{
    const char *doc = "# comment\n"
                      "a: 1\n"
                      "b:\n"
                      "  c: \"x: # y\"   # trailing comment\n"
                      "  d: [\"--p\", 'q''r', s]\n"
                      "  e: [one,\n"
                      "      two]\n"
                      "list:\n"
                      "- x\n"
                      "- k: v\n"
                      "  k2: v2\n"
                      "- >-\n"
                      "  folded\n"
                      "  text\n"
                      "lit: |\n"
                      "  {\n"
                      "    \"j\": 1\n"
                      "  }\n"
                      "empty:\n"
                      "after: z\n";
    char err[256];
    ynode *y = yparse(doc, "inline", err, sizeof err);
    if (!y)
        RC__FAIL("%s", err);
    ASSERT_STREQ(ystr(y, "a"), "1");
    ASSERT_STREQ(ystr(y, "b/c"), "x: # y");
    ASSERT_STREQ(ystr(y, "b/d/0"), "--p");
    ASSERT_STREQ(ystr(y, "b/d/1"), "q'r");
    ASSERT_STREQ(ystr(y, "b/d/2"), "s");
    ASSERT_STREQ(ystr(y, "b/e/1"), "two");
    ASSERT_STREQ(ystr(y, "list/0"), "x");
    ASSERT_STREQ(ystr(y, "list/1/k2"), "v2");
    ASSERT_STREQ(ystr(y, "list/2"), "folded text");
    ASSERT_STREQ(ystr(y, "lit"), "{\n  \"j\": 1\n}\n");
    ASSERT(yget(y, "empty") && yget(y, "empty")->kind == Y_NULL);
    ASSERT_STREQ(ystr(y, "after"), "z");
    yfree(y);

    const char *bad[] = {"a: 1\n  b: 2\n", "a: 1\na: 2\n", "a: [1, [2]]\n", "---\na: 1\n",
                         "a: \"open\n",    "a:\n\tb: 1\n", "just text\n",   "a: [x,\n"};
    for (size_t i = 0; i < RC_ARRAY_LEN(bad); i++) {
        y = yparse(bad[i], "bad", err, sizeof err);
        if (y)
            RC__FAIL("accepted invalid YAML #%zu: %s", i, bad[i]);
    }
}

/* The flag scanner itself: finds flags of our programs in scripts and rejects unknown
 * ones, ignoring other programs' flags. */
TEST(deploy_flag_scanner)
{
    flagcheck fc;
    flags_init(&fc);
    scan_text(&fc,
              "exec /usr/local/bin/recalld --config /x --brokers \"$B\" \\\n  --data-dir /d\n"
              "x=$(recallctl --raw stats) && tar --anchored -cf - .\n"
              "ExecStart=/usr/local/bin/recalld --socket /run/s\n"
              "useradd --gid recalld --home-dir /var/lib/recalld recalld\n"
              "CMD [\"recallctl\", \"--timeout\", \"2000\", \"health\"]\n",
              "good");
    ASSERT_STREQ(fc.bad, "");
    ASSERT_EQ(fc.checked, 6);
    scan_text(&fc, "recalld --config x --no-such-flag\nrecalld-gen --brokers b --socket s\n",
              "bad");
    ASSERT(strstr(fc.bad, "recalld --no-such-flag") != NULL);
    ASSERT(strstr(fc.bad, "recalld-gen --socket") != NULL);
    ASSERT(strstr(fc.bad, "--brokers") == NULL);
    flags_free(&fc);
}

TEST(deploy_dockerfile)
{
    char *text = e2e_read_file(DEPLOY "Dockerfile");
    /* Join continuation lines, then look at instructions one by one. */
    for (char *c = text; (c = strstr(c, "\\\n")) != NULL;)
        c[0] = c[1] = ' ';
    int stage = 0, nfrom = 0, first = 1, deps_script = 0, cmake = 0, healthcheck = 0;
    int from_build = 0, config_copied = 0, ca_certs = 0;
    char user[128] = "", volume[512] = "", entrypoint[256] = "";
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        while (*line == ' ')
            line++;
        if (!*line || *line == '#')
            continue;
        if (first) {
            ASSERT(strncmp(line, "ARG BASE=debian:bookworm-slim", 29) == 0);
            first = 0;
            continue;
        }
        if (!strncmp(line, "FROM ", 5)) {
            nfrom++;
            stage = nfrom;
            if (nfrom == 1)
                ASSERT(strstr(line, "FROM ${BASE} AS build") == line);
            else
                ASSERT(strstr(line, "FROM ${BASE}") == line);
            user[0] = '\0';
            continue;
        }
        if (stage == 1 && !strncmp(line, "RUN ", 4)) {
            deps_script |= strstr(line, "deploy/install-deps.sh") != NULL;
            cmake |= strstr(line, "cmake --build") != NULL;
        }
        if (stage >= 2 && !strncmp(line, "RUN ", 4) && strstr(line, "apt-get install")) {
            /* Runtime stage: libraries only, no headers or compilers. */
            ASSERT(strstr(line, "-dev ") == NULL && strstr(line, "build-essential") == NULL);
            ASSERT(strstr(line, "librdkafka1") && strstr(line, "libopenblas0"));
            /* TLS to a broker with a public CA: without ssl.ca.location,
             * librdkafka uses OpenSSL's default store, /etc/ssl/certs. */
            ca_certs |= strstr(line, " ca-certificates") != NULL;
        }
        if (!strncmp(line, "COPY ", 5)) {
            if (strstr(line, "--from=build"))
                from_build = 1;
            else {
                char src[256], dst[256];
                ASSERT_EQ(sscanf(line + 5, "%255s %255s", src, dst), 2);
                char path[600];
                snprintf(path, sizeof path, "%s/%s", RC_SOURCE_DIR, src);
                if (!path_exists(path))
                    RC__FAIL("Dockerfile COPY source %s does not exist", src);
                if (!strcmp(dst, "/etc/recalld/recalld.json")) {
                    char *json = e2e_read_file(path);
                    rc_config c;
                    load_config_str(json, src, &c);
                    ASSERT_STREQ(c.socket_path, "/run/recalld/recalld.sock");
                    ASSERT_STREQ(c.data_dir, "/var/lib/recalld");
                    ASSERT(!c.embedded && c.brokers[0]);
                    free(json);
                    config_copied = 1;
                }
            }
        }
        if (!strncmp(line, "USER ", 5))
            snprintf(user, sizeof user, "%s", line + 5);
        if (!strncmp(line, "VOLUME ", 7))
            snprintf(volume, sizeof volume, "%s", line + 7);
        if (!strncmp(line, "ENTRYPOINT ", 11))
            snprintf(entrypoint, sizeof entrypoint, "%s", line + 11);
        if (!strncmp(line, "HEALTHCHECK ", 12)) {
            ASSERT(strstr(line, " CMD ") != NULL);
            ASSERT(strstr(line, "recallctl") != NULL && strstr(line, "health") != NULL);
            healthcheck = stage;
        }
    }
    free(text);
    ASSERT_GE(nfrom, 2);
    ASSERT(deps_script && cmake && from_build && config_copied);
    ASSERT_EQ(ca_certs, 1);
    ASSERT_EQ(healthcheck, nfrom);
    /* The runtime stage runs as a named non-root user. */
    ASSERT(user[0] != '\0');
    ASSERT(strncmp(user, "root", 4) != 0 && strncmp(user, "0", 1) != 0);
    ASSERT(strstr(volume, "/run/recalld") && strstr(volume, "/var/lib/recalld"));
    ASSERT(entrypoint[0] != '\0');

    /* The entrypoint execs recalld (PID 1 gets SIGTERM) with the image's config. */
    char *ep = e2e_read_file(DEPLOY "entrypoint.sh");
    ASSERT(strstr(entrypoint, "recalld-entrypoint") != NULL);
    ASSERT(strstr(ep, "exec /usr/local/bin/recalld --config") != NULL);
    ASSERT(strstr(ep, "/etc/recalld/recalld.json") != NULL);
    free(ep);
    struct stat st;
    ASSERT_EQ(stat(DEPLOY "entrypoint.sh", &st), 0);
    ASSERT(st.st_mode & S_IXUSR);
    ASSERT_EQ(stat(DEPLOY "build-image.sh", &st), 0);
    ASSERT(st.st_mode & S_IXUSR);
}

static int seq_has_prefix(ynode *seq, const char *prefix)
{
    for (size_t i = 0; seq && seq->kind == Y_SEQ && i < seq->n; i++)
        if (seq->kid[i]->str && !strncmp(seq->kid[i]->str, prefix, strlen(prefix)))
            return 1;
    return 0;
}

static int seq_has_suffix(ynode *seq, const char *suffix)
{
    for (size_t i = 0; seq && seq->kind == Y_SEQ && i < seq->n; i++) {
        const char *s = seq->kid[i]->str;
        size_t n = s ? strlen(s) : 0, m = strlen(suffix);
        if (n >= m && !strcmp(s + n - m, suffix))
            return 1;
    }
    return 0;
}

/* Value following arg in an argv list, or NULL. */
static const char *arg_value(ynode *seq, const char *arg)
{
    for (size_t i = 0; seq && seq->kind == Y_SEQ && i + 1 < seq->n; i++)
        if (seq->kid[i]->str && !strcmp(seq->kid[i]->str, arg))
            return seq->kid[i + 1]->str;
    return NULL;
}

/* Every named volume a compose service of y mounts is declared, and every
 * flag of its argv (entrypoint + command, or the image's recalld with the
 * command alone) and healthcheck exists. */
static void compose_services_check(flagcheck *fc, ynode *y, const char *file)
{
    ynode *svcs = yget(y, "services");
    for (size_t i = 0; i < svcs->n; i++) {
        ynode *s = svcs->kid[i];
        char where[256];
        snprintf(where, sizeof where, "%s services.%s", file, s->key);
        ynode *vols = yget(s, "volumes");
        for (size_t j = 0; vols && j < vols->n; j++) {
            const char *v = vols->kid[j]->str;
            ASSERT(v != NULL);
            if (v[0] != '.' && v[0] != '/') {
                char name[128];
                snprintf(name, sizeof name, "volumes/%.*s", (int)strcspn(v, ":"), v);
                if (!yget(y, name))
                    RC__FAIL("%s: volume %s not declared", where, name);
            }
        }
        const char *img = ystr(s, "image");
        int ours = img && !strcmp(img, IMAGE);
        ynode *ep = yget(s, "entrypoint"), *cmd = yget(s, "command");
        if (ep && cmd) {
            /* entrypoint + command form one argv. */
            ynode all = {.kind = Y_SEQ};
            for (size_t j = 0; j < ep->n; j++)
                yadd(&all, ep->kid[j]);
            for (size_t j = 0; j < cmd->n; j++)
                yadd(&all, cmd->kid[j]);
            scan_argv(fc, &all, NULL, where);
            free(all.kid);
        } else {
            scan_argv(fc, ep ? ep : cmd, ours && !ep ? &fc->progs[0] : NULL, where);
        }
        scan_argv(fc, yget(s, "healthcheck/test"), NULL, where);
    }
}

TEST(deploy_compose)
{
    flagcheck fc;
    flags_init(&fc);
    ynode *y = yparse_file(DEPLOY "compose.yaml");
    ynode *svcs = yget(y, "services");
    ASSERT(svcs && svcs->kind == Y_MAP);

    /* A real broker, single-node KRaft (no ZooKeeper). */
    ynode *kafka = yget(svcs, "kafka");
    ASSERT(kafka != NULL);
    const char *kimg = ystr_req(kafka, "image");
    ASSERT(strstr(kimg, "kafka") != NULL && strchr(kimg, ':') != NULL);
    ASSERT(strstr(ystr_req(kafka, "environment/KAFKA_PROCESS_ROLES"), "controller") != NULL);
    ASSERT(ystr(kafka, "environment/KAFKA_CONTROLLER_QUORUM_VOTERS") != NULL);
    ASSERT(strstr(ystr_req(kafka, "environment/KAFKA_ADVERTISED_LISTENERS"), "kafka:9092"));
    ASSERT(yget(kafka, "environment/KAFKA_ZOOKEEPER_CONNECT") == NULL);

    /* recalld: built from deploy/Dockerfile, brokers kafka:9092, volumes, healthcheck. */
    ynode *rd = yget(svcs, "recalld");
    ASSERT(rd != NULL);
    ASSERT_STREQ(ystr(rd, "image"), IMAGE);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s", DEPLOY, ystr_req(rd, "build/context"),
             ystr_req(rd, "build/dockerfile"));
    if (!path_exists(path))
        RC__FAIL("compose build: %s does not exist", path);
    snprintf(path, sizeof path, "%s/%s/CMakeLists.txt", DEPLOY, ystr_req(rd, "build/context"));
    ASSERT(path_exists(path)); /* the context is the repository root */
    ASSERT(yget(rd, "entrypoint") == NULL);
    ASSERT_STREQ(arg_value(yget(rd, "command"), "--brokers"), "kafka:9092");
    ASSERT(seq_has_suffix(yget(rd, "volumes"), ":/run/recalld"));
    ASSERT(seq_has_suffix(yget(rd, "volumes"), ":/var/lib/recalld"));
    ynode *test = yget(rd, "healthcheck/test");
    ASSERT(test && test->kind == Y_SEQ && test->n >= 2);
    ASSERT(seq_has_prefix(test, "recallctl") && seq_has_suffix(test, "health"));
    ASSERT(seq_has_suffix(yget(rd, "ports"), ":9464"));
    ASSERT(yget(rd, "depends_on/kafka-init") || yget(rd, "depends_on/kafka"));

    /* The generator: recalld-gen from the same image, producing to the broker. */
    ynode *gen = yget(svcs, "generator");
    ASSERT(gen != NULL);
    ASSERT_STREQ(ystr(gen, "image"), IMAGE);
    ASSERT_STREQ(ystr(gen, "entrypoint/0"), "recalld-gen");
    ASSERT_STREQ(arg_value(yget(gen, "command"), "--brokers"), "kafka:9092");

    /* Every named volume a service mounts is declared; every flag exists. */
    compose_services_check(&fc, y, "compose.yaml");
    scan_file(&fc, DEPLOY "compose.yaml");
    if (fc.bad[0])
        RC__FAIL("flags that do not exist:\n%s", fc.bad);
    ASSERT_GE(fc.checked, 10);
    yfree(y);
    flags_free(&fc);
}

/* Every flag of a pod's containers exists: recalld's args after the image's
 * entrypoint, command + args of other containers as one argv, the probes. */
static void k8s_containers_flags(flagcheck *fc, ynode *ctrs)
{
    for (size_t i = 0; i < ctrs->n; i++) {
        ynode *k = ctrs->kid[i];
        const char *where = ystr_req(k, "name");
        ynode *cmd = yget(k, "command"), *args = yget(k, "args");
        if (cmd) {
            ynode all = {.kind = Y_SEQ};
            for (size_t j = 0; j < cmd->n; j++)
                yadd(&all, cmd->kid[j]);
            for (size_t j = 0; args && j < args->n; j++)
                yadd(&all, args->kid[j]);
            scan_argv(fc, &all, NULL, where);
            free(all.kid);
        } else {
            scan_argv(fc, args, &fc->progs[0], where);
        }
        scan_argv(fc, yget(k, "readinessProbe/exec/command"), NULL, where);
        scan_argv(fc, yget(k, "livenessProbe/exec/command"), NULL, where);
        scan_argv(fc, yget(k, "startupProbe/exec/command"), NULL, where);
    }
}

TEST(deploy_k8s)
{
    flagcheck fc;
    flags_init(&fc);
    ynode *kust = yparse_file(DEPLOY "k8s/kustomization.yaml");
    ynode *res = yget(kust, "resources");
    ASSERT(res && res->kind == Y_SEQ && res->n >= 3);
    ynode *sts = NULL, *svc = NULL, *cm = NULL;
    for (size_t i = 0; i < res->n; i++) {
        char path[512];
        snprintf(path, sizeof path, "%sk8s/%s", DEPLOY, res->kid[i]->str);
        ynode *d = yparse_file(path);
        const char *kind = ystr_req(d, "kind");
        ynode **slot = !strcmp(kind, "StatefulSet") ? &sts
                       : !strcmp(kind, "Service")   ? &svc
                       : !strcmp(kind, "ConfigMap") ? &cm
                                                    : NULL;
        if (!slot || *slot)
            RC__FAIL("%s: unexpected or repeated kind %s", path, kind);
        *slot = d;
        scan_file(&fc, path);
    }
    ASSERT(sts && svc && cm);

    /* ConfigMap: the config loads and agrees with the pod's mounts and ports. */
    rc_config c;
    load_config_str(ystr_req(cm, "data/recalld.json"), "configmap recalld.json", &c);
    ASSERT(!c.embedded && c.brokers[0]);

    ynode *pod = yget(sts, "spec/template/spec");
    ynode *ctrs = yget(pod, "containers");
    ynode *rd = yby_name(ctrs, "recalld");
    ASSERT(rd != NULL);
    ASSERT_STREQ(ystr(rd, "image"), IMAGE);
    ASSERT(yget(rd, "command") == NULL); /* the image's entrypoint: recalld */
    const char *sock_dir = NULL, *data_dir = NULL, *conf_dir = NULL;
    ynode *mounts = yget(rd, "volumeMounts");
    for (size_t i = 0; mounts && i < mounts->n; i++) {
        const char *name = ystr_req(mounts->kid[i], "name");
        const char *mp = ystr_req(mounts->kid[i], "mountPath");
        if (!strcmp(name, "socket"))
            sock_dir = mp;
        else if (!strcmp(name, "data"))
            data_dir = mp;
        else if (!strcmp(name, "config"))
            conf_dir = mp;
    }
    ASSERT(sock_dir && data_dir && conf_dir);
    ASSERT(!strncmp(c.socket_path, sock_dir, strlen(sock_dir)) &&
           c.socket_path[strlen(sock_dir)] == '/');
    ASSERT_STREQ(c.data_dir, data_dir);
    char conf_path[600];
    snprintf(conf_path, sizeof conf_path, "%s/recalld.json", conf_dir);
    ASSERT_STREQ(arg_value(yget(rd, "args"), "--config"), conf_path);
    ASSERT_STREQ(ystr(yby_name(yget(pod, "volumes"), "config"), "configMap/name"),
                 ystr_req(cm, "metadata/name"));

    /* Checkpoints on a claim per replica; the socket on an emptyDir shared with the app. */
    ynode *claims = yget(sts, "spec/volumeClaimTemplates");
    int claimed = 0;
    for (size_t i = 0; claims && claims->kind == Y_SEQ && i < claims->n; i++) {
        const char *n = ystr(claims->kid[i], "metadata/name");
        claimed |=
            n && !strcmp(n, "data") && ystr(claims->kid[i], "spec/resources/requests/storage");
    }
    ASSERT(claimed);
    ASSERT(yby_name(yget(pod, "volumes"), "data") == NULL); /* not shadowed by a pod volume */
    ynode *sockvol = yby_name(yget(pod, "volumes"), "socket");
    ASSERT(sockvol && yget(sockvol, "emptyDir"));
    int sharing = 0;
    for (size_t i = 0; i < ctrs->n; i++) {
        ynode *m = yby_name(yget(ctrs->kid[i], "volumeMounts"), "socket");
        if (m) {
            ASSERT_STREQ(ystr(m, "mountPath"), sock_dir);
            sharing++;
        }
    }
    ASSERT_GE(sharing, 2);

    /* Probes through recallctl; readiness is `health`. */
    ynode *ready = yget(rd, "readinessProbe/exec/command");
    ASSERT(seq_has_prefix(ready, "recallctl") && seq_has_suffix(ready, "health"));
    ASSERT(seq_has_prefix(yget(rd, "livenessProbe/exec/command"), "recallctl"));

    /* Non-root; the socket group reaches the app through fsGroup. */
    ASSERT_STREQ(ystr(pod, "securityContext/runAsNonRoot"), "true");
    ASSERT(strcmp(ystr_req(pod, "securityContext/runAsUser"), "0") != 0);
    ASSERT(ystr(pod, "securityContext/fsGroup") != NULL);

    /* The Service: metrics only, on the port recalld's config listens on. */
    ASSERT_STREQ(ystr(sts, "spec/serviceName"), ystr_req(svc, "metadata/name"));
    ynode *ports = yget(svc, "spec/ports");
    ASSERT(ports && ports->n == 1);
    ASSERT_STREQ(ystr(ports, "0/name"), "metrics");
    ASSERT_EQ(atoi(ystr_req(ports, "0/port")), (int)c.metrics_port);
    ynode *cport = yby_name(yget(rd, "ports"), "metrics");
    ASSERT(cport != NULL);
    ASSERT_EQ(atoi(ystr_req(cport, "containerPort")), (int)c.metrics_port);
    ASSERT(strcmp(c.metrics_bind, "127.0.0.1") != 0); /* reachable from the Service */

    /* Flags: args after the entrypoint, commands of other containers, probes. */
    k8s_containers_flags(&fc, ctrs);
    if (fc.bad[0])
        RC__FAIL("flags that do not exist:\n%s", fc.bad);
    ASSERT_GE(fc.checked, 6);
    yfree(sts);
    yfree(svc);
    yfree(cm);
    yfree(kust);
    flags_free(&fc);
}

/* A compose service's recalld argv (the image's entrypoint: command alone). */
static ynode *svc_cmd(ynode *svcs, const char *name)
{
    ynode *s = yget(svcs, name);
    if (!s)
        RC__FAIL("compose.cluster.yaml: no service %s", name);
    ASSERT_STREQ(ystr(s, "image"), IMAGE);
    ASSERT(yget(s, "entrypoint") == NULL);
    return yget(s, "command");
}

/* Scaling out with compose: two trainer shards and a replica on one broker, with
 * the same --brokers/--topic/--group, a data volume and hostname per shard, the
 * application on the replica's socket, and the by-city and compacted vector
 * topics created before any recalld starts. */
TEST(deploy_compose_cluster)
{
    flagcheck fc;
    flags_init(&fc);
    ynode *y = yparse_file(DEPLOY "compose.cluster.yaml");
    ynode *svcs = yget(y, "services");
    ASSERT(svcs && svcs->kind == Y_MAP);
    ASSERT(yget(svcs, "kafka") != NULL);
    const char *init = ystr_req(svcs, "kafka-init/command/0");
    ASSERT(strstr(init, "--topic clicks.by-city") != NULL);
    const char *vec = strstr(init, "--topic clicks.vectors");
    ASSERT(vec && strstr(vec, "cleanup.policy=compact") != NULL);
    static const char *roles[][2] = {
        {"trainer-1", "trainer"}, {"trainer-2", "trainer"}, {"replica", "replica"}};
    const char *data[2] = {NULL, NULL};
    for (size_t i = 0; i < RC_ARRAY_LEN(roles); i++) {
        ynode *cmd = svc_cmd(svcs, roles[i][0]);
        ASSERT_STREQ(arg_value(cmd, "--role"), roles[i][1]);
        ASSERT_STREQ(arg_value(cmd, "--brokers"), "kafka:9092");
        ASSERT_STREQ(arg_value(cmd, "--topic"), "clicks");
        ASSERT_STREQ(arg_value(cmd, "--group"), "recalld");
        ASSERT(yget(svcs, "kafka-init") &&
               ystr(yget(svcs, roles[i][0]), "depends_on/kafka-init/condition"));
        ynode *s = yget(svcs, roles[i][0]);
        if (i < 2) {
            /* A checkpoint volume and a hostname of its own (static membership). */
            ASSERT(seq_has_suffix(yget(s, "volumes"), ":/var/lib/recalld"));
            data[i] = ystr_req(s, "volumes/0");
            ASSERT_STREQ(ystr(s, "hostname"), roles[i][0]);
        }
    }
    ASSERT(strcmp(data[0], data[1]) != 0);
    /* The application shares the replica's socket volume. */
    const char *rsock = ystr_req(svcs, "replica/volumes/0");
    ASSERT(strstr(rsock, ":/run/recalld") != NULL);
    ASSERT_STREQ(ystr(svcs, "app/volumes/0"), rsock);
    ASSERT_STREQ(ystr(svcs, "app/environment/RECALLD_SOCKET"), "/run/recalld/recalld.sock");
    ASSERT_STREQ(arg_value(yget(svcs, "generator/command"), "--topic"), "clicks");
    /* Every flag exists; every named volume is declared. */
    compose_services_check(&fc, y, "compose.cluster.yaml");
    scan_file(&fc, DEPLOY "compose.cluster.yaml");
    if (fc.bad[0])
        RC__FAIL("flags that do not exist:\n%s", fc.bad);
    ASSERT_GE(fc.checked, 15);
    yfree(y);
    flags_free(&fc);
}

/* Scaling out on Kubernetes: a trainer StatefulSet (--role trainer, a claim per
 * shard), the replica as a sidecar of the application (--role replica, the
 * socket on a shared emptyDir), one ConfigMap for both that loads, and a Job
 * that creates the by-city and the compacted vector topics. */
TEST(deploy_k8s_cluster)
{
    flagcheck fc;
    flags_init(&fc);
    ynode *kust = yparse_file(DEPLOY "k8s/cluster/kustomization.yaml");
    ynode *res = yget(kust, "resources");
    ASSERT(res && res->kind == Y_SEQ);
    ynode *sts = NULL, *dep = NULL, *cm = NULL, *job = NULL, *svc = NULL;
    for (size_t i = 0; i < res->n; i++) {
        char path[512];
        snprintf(path, sizeof path, "%sk8s/cluster/%s", DEPLOY, res->kid[i]->str);
        ynode *d = yparse_file(path);
        const char *kind = ystr_req(d, "kind");
        ynode **slot = !strcmp(kind, "StatefulSet")  ? &sts
                       : !strcmp(kind, "Deployment") ? &dep
                       : !strcmp(kind, "ConfigMap")  ? &cm
                       : !strcmp(kind, "Job")        ? &job
                       : !strcmp(kind, "Service")    ? &svc
                                                     : NULL;
        if (!slot || *slot)
            RC__FAIL("%s: unexpected or repeated kind %s", path, kind);
        *slot = d;
        scan_file(&fc, path);
    }
    ASSERT(sts && dep && cm && job && svc);
    rc_config c;
    load_config_str(ystr_req(cm, "data/recalld.json"), "cluster configmap recalld.json", &c);
    ASSERT(!c.embedded && c.brokers[0] && c.data_dir[0]);
    const char *cmname = ystr_req(cm, "metadata/name");

    /* Trainers: role trainer, a claim per shard mounted at data_dir, more than one. */
    ynode *tpod = yget(sts, "spec/template/spec");
    ynode *tr = yby_name(yget(tpod, "containers"), "recalld");
    ASSERT(tr != NULL);
    ASSERT_STREQ(arg_value(yget(tr, "args"), "--role"), "trainer");
    ASSERT_GE(atoi(ystr_req(sts, "spec/replicas")), 2);
    ASSERT_STREQ(ystr(sts, "spec/serviceName"), ystr_req(svc, "metadata/name"));
    ASSERT_STREQ(ystr(sts, "spec/volumeClaimTemplates/0/metadata/name"), "data");
    ASSERT_STREQ(ystr(yby_name(yget(tr, "volumeMounts"), "data"), "mountPath"), c.data_dir);
    ASSERT_STREQ(ystr(yby_name(yget(tpod, "volumes"), "config"), "configMap/name"), cmname);

    /* The application pod: a replica sidecar and the app on one socket emptyDir. */
    ynode *apod = yget(dep, "spec/template/spec");
    ynode *rep = yby_name(yget(apod, "containers"), "recalld-replica");
    ynode *app = yby_name(yget(apod, "containers"), "app");
    ASSERT(rep && app);
    ASSERT_STREQ(arg_value(yget(rep, "args"), "--role"), "replica");
    ASSERT(yby_name(yget(rep, "volumeMounts"), "data") == NULL); /* checkpoints nothing */
    ASSERT(yget(yby_name(yget(apod, "volumes"), "socket"), "emptyDir") != NULL);
    const char *rs = ystr_req(yby_name(yget(rep, "volumeMounts"), "socket"), "mountPath");
    ASSERT_STREQ(ystr(yby_name(yget(app, "volumeMounts"), "socket"), "mountPath"), rs);
    ASSERT(!strncmp(c.socket_path, rs, strlen(rs)) && c.socket_path[strlen(rs)] == '/');
    ASSERT_STREQ(ystr(yby_name(yget(apod, "volumes"), "config"), "configMap/name"), cmname);
    ASSERT(ystr(apod, "securityContext/fsGroup") != NULL);

    /* The topics. */
    const char *topics = ystr_req(job, "spec/template/spec/containers/0/args/0");
    ASSERT(strstr(topics, "--topic clicks.by-city") != NULL);
    const char *vec = strstr(topics, "--topic clicks.vectors");
    ASSERT(vec && strstr(vec, "cleanup.policy=compact") != NULL);

    /* Flags of every container (args after the image's entrypoint) and probes. */
    k8s_containers_flags(&fc, yget(tpod, "containers"));
    k8s_containers_flags(&fc, yget(apod, "containers"));
    if (fc.bad[0])
        RC__FAIL("flags that do not exist:\n%s", fc.bad);
    ASSERT_GE(fc.checked, 8);
    yfree(sts);
    yfree(dep);
    yfree(cm);
    yfree(job);
    yfree(svc);
    yfree(kust);
    flags_free(&fc);
}

TEST(deploy_systemd)
{
    static const char *required[] = {"ProtectSystem=strict",
                                     "ProtectHome=yes",
                                     "PrivateTmp=yes",
                                     "NoNewPrivileges=yes",
                                     "RuntimeDirectory=recalld",
                                     "StateDirectory=recalld",
                                     "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                                     "SystemCallFilter=@system-service",
                                     "MemoryDenyWriteExecute=yes",
                                     "LockPersonality=yes",
                                     "CapabilityBoundingSet="};
    char *unit = e2e_read_file(DEPLOY "systemd/recalld.service");
    for (size_t i = 0; i < RC_ARRAY_LEN(required); i++) {
        char needle[128];
        snprintf(needle, sizeof needle, "\n%s\n", required[i]);
        if (!strstr(unit, needle))
            RC__FAIL("recalld.service lacks %s", required[i]);
    }
    ASSERT(strstr(unit, "\nUser=") || strstr(unit, "\nDynamicUser=yes\n"));
    ASSERT(strstr(unit, "\nUser=root\n") == NULL);
    const char *reload = strstr(unit, "\nExecReload=");
    ASSERT(reload && strstr(reload, "-HUP $MAINPID") &&
           strstr(reload, "-HUP") < strchr(reload + 1, '\n'));
    /* recalld's paths are the ones systemd creates for it. */
    const char *start = strstr(unit, "\nExecStart=");
    ASSERT(start != NULL);
    char line[1024];
    snprintf(line, sizeof line, "%.*s", (int)strcspn(start + 1, "\n"), start + 1);
    ASSERT(strstr(line, "--socket /run/recalld/") != NULL);
    ASSERT(strstr(line, "--data-dir /var/lib/recalld") != NULL);

    flagcheck fc;
    flags_init(&fc);
    scan_text(&fc, unit, "recalld.service");
    if (fc.bad[0])
        RC__FAIL("flags that do not exist:\n%s", fc.bad);
    ASSERT_GE(fc.checked, 5);
    flags_free(&fc);
    free(unit);

    char *sysusers = e2e_read_file(DEPLOY "systemd/recalld.sysusers");
    ASSERT(strstr(sysusers, "\nu recalld ") != NULL);
    free(sysusers);
}

/* Scripts and docs of deploy/: every flag they pass to our programs exists. */
TEST(deploy_scripts_flags)
{
    static const char *files[] = {"Dockerfile", "entrypoint.sh", "build-image.sh", "README.md"};
    flagcheck fc;
    flags_init(&fc);
    for (size_t i = 0; i < RC_ARRAY_LEN(files); i++) {
        char path[512];
        snprintf(path, sizeof path, "%s%s", DEPLOY, files[i]);
        int before = fc.checked;
        scan_file(&fc, path);
        if (fc.checked == before)
            RC__FAIL("%s: no flag of recalld's programs found (scanner out of step?)", path);
    }
    if (fc.bad[0])
        RC__FAIL("flags that do not exist:\n%s", fc.bad);
    flags_free(&fc);
}
