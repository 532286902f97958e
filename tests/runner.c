/* Test runner: `rc_tests` runs every case, `rc_tests NAME...` only those.
 * Each case runs in its own process with a timeout (RC_TEST_TIMEOUT seconds,
 * default 240), so a crash or hang fails that case only. A case that cannot
 * run here (its data is absent) calls RC_SKIP: it exits with RC_SKIP_EXIT and
 * the runner reports "skip NAME reason". Exit status: 1 when a case failed,
 * RC_SKIP_EXIT when every case selected was skipped (ctest's SKIP_RETURN_CODE),
 * else 0. In AddressSanitizer builds every case ends with LeakSanitizer's check. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RC_TEST_LSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(RC_TEST_LSAN)
#define RC_TEST_LSAN 1
#endif
#ifdef RC_TEST_LSAN
#include <sanitizer/lsan_interface.h>
#endif

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

/* In a case's process: the write end of the pipe that carries a skip reason
 * to the runner (-1 outside a case). */
static int skip_fd = -1;

void rc_test_skip(const char *file, int line, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    for (char *p = why; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    fprintf(stderr, "%s:%d: skipped: %s\n", file, line, why);
    if (skip_fd >= 0) {
        size_t len = strlen(why), off = 0;
        while (off < len) {
            ssize_t w = write(skip_fd, why + off, len - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            off += (size_t)w;
        }
    }
    fflush(NULL);
    _exit(RC_SKIP_EXIT);
}

/* The end of a case that returned: LeakSanitizer's check first when built with
 * it (_exit skips its exit-time hook; a leak makes it die non-zero here). */
static void case_done(void)
{
    fflush(NULL);
#ifdef RC_TEST_LSAN
    __lsan_do_leak_check();
#endif
    _exit(0);
}

enum outcome { PASS, FAIL, SKIP };

static enum outcome run_one(const struct entry *e, int timeout_s)
{
    struct timespec t0, t1;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        perror("pipe2");
        return FAIL;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        close(fds[0]);
        close(fds[1]);
        return FAIL;
    }
    if (pid == 0) {
        close(fds[0]);
        skip_fd = fds[1];
        alarm((unsigned)timeout_s);
        e->fn();
        case_done();
    }
    close(fds[1]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    enum outcome out = FAIL;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        printf("ok   %-40s %.2fs\n", e->name, s);
        out = PASS;
    } else if (WIFEXITED(st) && WEXITSTATUS(st) == RC_SKIP_EXIT) {
        /* The case wrote its reason before exiting; a process it forked may
         * still hold the write end, so read what is there without waiting. */
        char why[512];
        ssize_t n = 0;
        if (fcntl(fds[0], F_SETFL, O_NONBLOCK) == 0)
            n = read(fds[0], why, sizeof why - 1);
        why[n > 0 ? n : 0] = '\0';
        printf("skip %-40s %s\n", e->name, n > 0 ? why : "(no reason given)");
        out = SKIP;
    } else if (WIFSIGNALED(st)) {
        printf("FAIL %-40s %s%s\n", e->name, strsignal(WTERMSIG(st)),
               WTERMSIG(st) == SIGALRM ? " (timeout)" : "");
    } else {
        printf("FAIL %-40s exit %d\n", e->name, WEXITSTATUS(st));
    }
    close(fds[0]);
    return out;
}

int main(int argc, char **argv)
{
    const char *t = getenv("RC_TEST_TIMEOUT");
    int timeout_s = t ? atoi(t) : 240;
    int passed = 0, failed = 0, skipped = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 1; i < argc; i++) {
        const struct entry *e = tests;
        while (e->name && strcmp(argv[i], e->name) != 0)
            e++;
        if (!e->name) {
            fprintf(stderr, "rc_tests: no test named %s\n", argv[i]);
            return 2;
        }
    }
    for (const struct entry *e = tests; e->name; e++) {
        int want = argc < 2;
        for (int i = 1; i < argc; i++)
            want |= strcmp(argv[i], e->name) == 0;
        if (!want)
            continue;
        switch (run_one(e, timeout_s)) {
        case PASS:
            passed++;
            break;
        case SKIP:
            skipped++;
            break;
        default:
            failed++;
        }
    }
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    if (failed)
        return 1;
    return passed == 0 && skipped > 0 ? RC_SKIP_EXIT : 0;
}
