/* Socket recall latency and quality against a running recalld.
 *   bench_recall --socket PATH --users N [--requests R] [--k K] [--quality Q]
 *                [--mode avg|multi_category|two_tower|itemknn|fused] [--city C]
 *                [--after FILE] [--until FILE]
 *                [--slice-us US]
 * Latency: R sequential `recall` requests for random users u0..u(N-1) on one
 * connection (the client waits for each reply), p50/p90/p99/max in us.
 * --until FILE: the run also ends once FILE exists (checked every 32
 * requests; R is then a cap), so a script can measure while something else
 * runs (bench/install.sh) and end the run when it is over; --after FILE:
 * the run starts once FILE exists (connected, polled every millisecond).
 * --slice-us US: the client asks for that scheduler slice (slice.h), as the
 * daemon's request threads do, so that on a machine whose cores the daemon's
 * trainer and the load generator keep busy the client's own wake-up does not
 * wait out their slices (a client on another machine never does).
 * Quality: for Q users, the same request with "exact":true (brute force over
 * every item, same scoring) right after; recall@K = |index ∩ exact| / K.
 * Stages: the server's per-stage histograms (stats "recall_stages") read
 * before and after the latency run; the table gives, for this run's requests
 * only, each stage's mean and p50/p99 (interpolated in its bucket), in us. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "recalld/common.h"
#include "recalld/slice.h"

static int fd = -1;
static char rbuf[1 << 22];
static size_t rlen;

static char *roundtrip(const char *line)
{
    size_t n = strlen(line), off = 0;
    while (off < n) {
        ssize_t w = write(fd, line + off, n - off);
        if (w <= 0)
            return NULL;
        off += (size_t)w;
    }
    for (;;) {
        char *nl = memchr(rbuf, '\n', rlen);
        if (nl) {
            *nl = '\0';
            static char out[1 << 22];
            memcpy(out, rbuf, (size_t)(nl - rbuf) + 1);
            rlen -= (size_t)(nl + 1 - rbuf);
            memmove(rbuf, nl + 1, rlen);
            return out;
        }
        ssize_t r = read(fd, rbuf + rlen, sizeof rbuf - rlen);
        if (r <= 0)
            return NULL;
        rlen += (size_t)r;
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The stats op's "recall_stages" (a new reference), NULL when absent. */
static json_t *stages_now(void)
{
    char *r = roundtrip("{\"op\":\"stats\"}\n");
    json_t *j = r ? json_loads(r, 0, NULL) : NULL;
    json_t *st = json_incref(json_object_get(j, "recall_stages"));
    json_decref(j);
    return st;
}

/* Quantile q from per-bucket counts n[0..nb] with bounds le[0..nb). */
static double quantile(const double *le, const double *n, size_t nb, double q)
{
    double total = 0, seen = 0;
    for (size_t i = 0; i <= nb; i++)
        total += n[i];
    if (total <= 0)
        return 0;
    for (size_t i = 0; i < nb; i++) {
        if (n[i] > 0 && seen + n[i] >= q * total)
            return (i ? le[i - 1] : 0) + (le[i] - (i ? le[i - 1] : 0)) * (q * total - seen) / n[i];
        seen += n[i];
    }
    return le[nb - 1];
}

/* Per-stage table of the requests between two stats readings. */
static void print_stages(json_t *before, json_t *after)
{
    json_t *bounds = json_object_get(after, "bounds_us");
    size_t nb = json_array_size(bounds);
    if (!before || !after || !nb || nb > 64) {
        printf("stages   (the server has no recall_stages)\n");
        return;
    }
    double le[64], n[65];
    for (size_t i = 0; i < nb; i++)
        le[i] = json_number_value(json_array_get(bounds, i));
    printf("stages   %-11s %8s %9s %9s %9s\n", "stage", "count", "mean_us", "p50_us", "p99_us");
    const char *key;
    json_t *cnt;
    json_object_foreach(json_object_get(after, "count"), key, cnt) {
        double c = json_number_value(cnt) -
                   json_number_value(json_object_get(json_object_get(before, "count"), key));
        double sum = json_number_value(json_object_get(json_object_get(after, "sum_us"), key)) -
                     json_number_value(json_object_get(json_object_get(before, "sum_us"), key));
        json_t *ba = json_object_get(json_object_get(after, "buckets"), key);
        json_t *bb = json_object_get(json_object_get(before, "buckets"), key);
        for (size_t i = 0; i <= nb; i++)
            n[i] =
                json_number_value(json_array_get(ba, i)) - json_number_value(json_array_get(bb, i));
        printf("stages   %-11s %8.0f %9.1f %9.1f %9.1f\n", key, c, c > 0 ? sum / c : 0,
               quantile(le, n, nb, 0.5), quantile(le, n, nb, 0.99));
    }
    /* The index work behind the scan stage: per request of this section. */
    double c = json_number_value(json_object_get(json_object_get(after, "count"), "total")) -
               json_number_value(json_object_get(json_object_get(before, "count"), "total"));
    json_t *wa = json_object_get(after, "work"), *wb = json_object_get(before, "work");
    if (wa && wb && c > 0) {
        double w[3];
        const char *names[3] = {"parts", "lists", "rows"};
        for (int i = 0; i < 3; i++)
            w[i] = (json_number_value(json_object_get(wa, names[i])) -
                    json_number_value(json_object_get(wb, names[i]))) /
                   c;
        printf("stages   work per request: %.1f partitions, %.1f IVF lists, %.0f rows scored\n",
               w[0], w[1], w[2]);
    }
}

static int ids(const char *reply, char ids_out[][32], int max)
{
    json_t *j = json_loads(reply, 0, NULL);
    int n = 0;
    size_t i;
    json_t *it;
    if (!j)
        return -1;
    json_array_foreach(json_object_get(j, "items"), i, it) {
        if (n < max)
            snprintf(ids_out[n++], 32, "%s", json_string_value(json_object_get(it, "item_id")));
    }
    json_decref(j);
    return n;
}

int main(int argc, char **argv)
{
    const char *sock = "/tmp/recalld.sock", *mode = "avg", *city = NULL, *until = NULL,
               *after = NULL;
    long users = 1000, requests = 20000, k = 50, quality = 200;
    static const struct option lo[] = {{"socket", 1, 0, 's'},
                                       {"users", 1, 0, 'u'},
                                       {"requests", 1, 0, 'r'},
                                       {"k", 1, 0, 'k'},
                                       {"quality", 1, 0, 'q'},
                                       {"mode", 1, 0, 'm'},
                                       {"city", 1, 0, 'c'},
                                       {"until", 1, 0, 'U'},
                                       {"after", 1, 0, 'A'},
                                       {"slice-us", 1, 0, 'S'},
                                       {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 's':
            sock = optarg;
            break;
        case 'u':
            users = atol(optarg);
            break;
        case 'r':
            requests = atol(optarg);
            break;
        case 'k':
            k = atol(optarg);
            break;
        case 'q':
            quality = atol(optarg);
            break;
        case 'm':
            mode = optarg;
            break;
        case 'c':
            city = optarg;
            break;
        case 'U':
            until = optarg;
            break;
        case 'A':
            after = optarg;
            break;
        case 'S':
            if (rc_slice_set((uint32_t)atol(optarg)) != atol(optarg))
                fprintf(stderr, "bench_recall: the kernel does not apply --slice-us %s\n", optarg);
            break;
        default:
            return 2;
        }
    }
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(sock) >= sizeof a.sun_path)
        return 2;
    memcpy(a.sun_path, sock, strlen(sock) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        fprintf(stderr, "bench_recall: connect %s: %s\n", sock, strerror(errno));
        return 1;
    }
    char line[512], cityf[96] = "";
    if (city)
        snprintf(cityf, sizeof cityf, ",\"city\":\"%s\"", city);
    rc_rng rng;
    rc_rng_seed(&rng, 1);
    uint64_t *lat = malloc((size_t)requests * sizeof *lat);
    long fallbacks = 0, errors = 0;
    while (after && access(after, F_OK) != 0)
        usleep(1000);
    json_t *st0 = stages_now();
    for (long i = 0; i < requests; i++) {
        if (until && i % 32 == 0 && access(until, F_OK) == 0) {
            requests = i;
            break;
        }
        snprintf(line, sizeof line,
                 "{\"op\":\"recall\",\"user_id\":\"u%u\",\"k\":%ld,\"mode\":\"%s\"%s}\n",
                 rc_rng_below(&rng, (uint32_t)users), k, mode, cityf);
        uint64_t t0 = rc_now_ns();
        char *r = roundtrip(line);
        lat[i] = (rc_now_ns() - t0) / 1000;
        if (!r)
            return 1;
        errors += strstr(r, "\"ok\":true") == NULL;
        fallbacks += strstr(r, "\"fallback\"") != NULL;
    }
    if (requests == 0) {
        fprintf(stderr, "bench_recall: no request made (%s existed at the start)\n", until);
        return 1;
    }
    qsort(lat, (size_t)requests, sizeof *lat, cmp_u64);
    printf(
        "latency  %ld requests k=%ld mode=%s%s: p50 %llu us  p90 %llu us  p99 %llu us  max %llu us"
        "  (errors %ld, popular fallbacks %ld)\n",
        requests, k, mode,
        !city                    ? ""
        : strcmp(city, "*") == 0 ? " all cities"
                                 : " city filter",
        (unsigned long long)lat[requests / 2], (unsigned long long)lat[requests * 9 / 10],
        (unsigned long long)lat[requests * 99 / 100], (unsigned long long)lat[requests - 1], errors,
        fallbacks);
    json_t *st1 = stages_now();
    print_stages(st0, st1);
    json_decref(st0);
    json_decref(st1);
    static char got[1000][32], want[1000][32];
    double sum = 0;
    long measured = 0;
    for (long i = 0; i < quality; i++) {
        uint32_t u = rc_rng_below(&rng, (uint32_t)users);
        snprintf(line, sizeof line,
                 "{\"op\":\"recall\",\"user_id\":\"u%u\",\"k\":%ld,\"mode\":\"%s\"%s}\n", u, k,
                 mode, cityf);
        int ng = ids(roundtrip(line), got, 1000);
        snprintf(line, sizeof line,
                 "{\"op\":\"recall\",\"user_id\":\"u%u\",\"k\":%ld,\"mode\":\"%s\","
                 "\"exact\":true%s}\n",
                 u, k, mode, cityf);
        int nw = ids(roundtrip(line), want, 1000);
        if (ng <= 0 || nw <= 0)
            continue;
        int hit = 0;
        for (int x = 0; x < ng; x++)
            for (int y = 0; y < nw; y++)
                hit += strcmp(got[x], want[y]) == 0;
        sum += (double)hit / nw;
        measured++;
    }
    if (measured)
        printf("quality  recall@%ld of the index against exact search: %.4f over %ld users\n", k,
               sum / (double)measured, measured);
    free(lat);
    close(fd);
    return 0;
}
