/* Test runner: `rc_tests` runs every case, `rc_tests NAME...` only those.
 * Each case runs in its own process with a timeout (RC_TEST_TIMEOUT seconds,
 * default 240), so a crash or hang fails that case only. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RC_TEST_ENTRY(name) void rc_test_##name(void);
#include "test_list.h"
#undef RC_TEST_ENTRY

struct entry {
    const char *name;
    void (*fn)(void);
};

#define RC_TEST_ENTRY(name) {#name, rc_test_##name},
static const struct entry tests[] = {
#include "test_list.h"
    {NULL, NULL}};
#undef RC_TEST_ENTRY

static int run_one(const struct entry *e, int timeout_s)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        alarm((unsigned)timeout_s);
        e->fn();
        fflush(NULL);
        _exit(0);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        ;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        printf("ok   %-40s %.2fs\n", e->name, s);
        return 0;
    }
    if (WIFSIGNALED(st))
        printf("FAIL %-40s %s%s\n", e->name, strsignal(WTERMSIG(st)),
               WTERMSIG(st) == SIGALRM ? " (timeout)" : "");
    else
        printf("FAIL %-40s exit %d\n", e->name, WEXITSTATUS(st));
    return 1;
}

int main(int argc, char **argv)
{
    const char *t = getenv("RC_TEST_TIMEOUT");
    int timeout_s = t ? atoi(t) : 240;
    int passed = 0, failed = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (const struct entry *e = tests; e->name; e++) {
        int want = argc < 2;
        for (int i = 1; i < argc; i++)
            want |= strcmp(argv[i], e->name) == 0;
        if (!want)
            continue;
        if (run_one(e, timeout_s))
            failed++;
        else
            passed++;
    }
    if (passed + failed == 0) {
        fprintf(stderr, "rc_tests: no test matched\n");
        return 2;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
