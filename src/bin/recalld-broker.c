/* recalld-broker: librdkafka's mock cluster alone in its own process, so that
 * the log outlives a recalld that is killed or restarted.
 *
 *   recalld-broker [--brokers N] [--partitions N] [--topic NAME]...
 *
 * The first line of stdout is the bootstrap address (flushed); logs go to
 * stderr. Runs until SIGTERM or SIGINT, then exits 0. The mock keeps only about
 * 5 MiB per partition (librdkafka 2.0.2) and drops older data silently: the
 * default of --partitions (recalld's kafka.embedded_partitions default, see
 * include/recalld/config.h) leaves room for ~2.3M generated clicks.
 *
 * Fault injection: each line on stdin is a command (rc_consumer_mock_command:
 * down ID|all, up ID|all, leader TOPIC PART ID, errors API COUNT ERROR,
 * topic-error TOPIC ERROR, create TOPIC PARTS, rtt ID MS), answered by one line
 * "ok" or "error: ..." on stdout. End of stdin is not a stop request. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/config.h"
#include "recalld/consumer.h"
#include "recalld/log.h"
#include "recalld/mock_broker.h"

#define MAX_TOPICS 64

static void usage(FILE *f)
{
    fprintf(f,
            "usage: recalld-broker [--brokers N (1)] [--partitions N (%d)] "
            "[--topic NAME]... (default: clicks clicks.dlq)\n"
            "The mock keeps about 5 MiB per partition and silently drops older data:\n"
            "use enough partitions, key messages by user, consume while producing.\n",
            RC_CONF_EMBEDDED_PARTITIONS);
}

/* Reads fault commands from stdin until end of file (signals stay blocked in
 * this thread: only sigwait in main receives them). */
static void *commands_main(void *arg)
{
    rc_consumer_mock *m = arg;
    char line[512], reply[256];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0])
            continue;
        rc_consumer_mock_command(m, line, reply, sizeof reply);
        printf("%s\n", reply);
        fflush(stdout);
    }
    return NULL;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    const char *topics[MAX_TOPICS];
    size_t ntopics = 0;
    int brokers = 1, partitions = RC_CONF_EMBEDDED_PARTITIONS;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--brokers") && parse_int(v, 1, 32, &brokers) == 0) {
            i++;
        } else if (!strcmp(a, "--partitions") && parse_int(v, 1, 10000, &partitions) == 0) {
            i++;
        } else if (!strcmp(a, "--topic") && v && *v && ntopics < MAX_TOPICS) {
            topics[ntopics++] = v;
            i++;
        } else {
            fprintf(stderr, "recalld-broker: bad argument: %s%s%s\n", a, v ? " " : "", v ? v : "");
            usage(stderr);
            return 2;
        }
    }
    if (ntopics == 0) {
        topics[ntopics++] = "clicks";
        topics[ntopics++] = "clicks.dlq";
    }

    /* Blocked before librdkafka starts its threads, so they inherit the mask and
     * only sigwait below receives the signals. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    char err[256];
    rc_consumer_mock *m = NULL;
    if (rc_consumer_mock_start(brokers, partitions, topics, ntopics, &m, err, sizeof err) != 0) {
        fprintf(stderr, "recalld-broker: %s\n", err);
        return 1;
    }
    printf("%s\n", rc_consumer_mock_bootstrap(m));
    fflush(stdout);
    pthread_t cmd;
    if (pthread_create(&cmd, NULL, commands_main, m) == 0)
        pthread_detach(cmd);
    rc_log_info("broker", "mock cluster up", "bootstrap=%s brokers=%d partitions=%d topics=%zu",
                rc_consumer_mock_bootstrap(m), brokers, partitions, ntopics);

    int sig = 0;
    while (sigwait(&set, &sig) != 0)
        ;
    rc_log_info("broker", "stopping", "signal=%d", sig);
    rc_consumer_mock_destroy(m);
    return 0;
}
