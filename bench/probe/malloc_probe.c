/* malloc_probe — LD_PRELOAD'ed into recalld by bench scripts (bench/recall.sh
 * MALLOC_INFO=1) to see what glibc's malloc holds free, per arena and by chunk
 * size, in a live process: gdb cannot call functions in the inferior on every
 * machine. A thread waits for the file $RC_MALLOC_PROBE.req to appear, writes
 * malloc_info's XML to $RC_MALLOC_PROBE and removes the request. Not linked
 * into anything recalld ships. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char req[4096], out[4096];

static void *probe(void *arg)
{
    (void)arg;
    for (;;) {
        if (access(req, F_OK) == 0) {
            char tmp[4200];
            snprintf(tmp, sizeof tmp, "%s.tmp", out);
            FILE *f = fopen(tmp, "w");
            if (f) {
                malloc_info(0, f);
                fclose(f);
                rename(tmp, out);
            }
            unlink(req);
        }
        usleep(100000);
    }
    return NULL;
}

__attribute__((constructor)) static void start(void)
{
    const char *p = getenv("RC_MALLOC_PROBE");
    pthread_t t;
    if (!p || !*p)
        return;
    snprintf(out, sizeof out, "%s", p);
    snprintf(req, sizeof req, "%s.req", p);
    if (pthread_create(&t, NULL, probe, NULL) == 0)
        pthread_detach(t);
}
