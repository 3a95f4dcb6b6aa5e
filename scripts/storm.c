/*
 * storm: a process storm generator for procMonitor's benchmark (scripts/bench.ts).
 *
 *   storm [--hold] fork N PARALLEL                 fork + _exit, N children over PARALLEL workers
 *   storm [--hold] exec N PARALLEL PATH [ARGS...]  fork + execv(PATH, {PATH, ARGS...})
 *   storm [--hold] paced N INTERVAL_US             fork + _exit one at a time, INTERVAL_US apart
 *   storm [--hold] paced-exec N INTERVAL_US PATH [ARGS...]
 *                                                  fork + execv one at a time, INTERVAL_US apart
 *
 * Every worker forks its share as fast as it can, keeping a few children in flight and
 * reaping them with waitpid. The paced modes fork from the storm process itself, reap each
 * child before the next, and start children on a fixed schedule, one every INTERVAL_US from
 * the first (a child that starts late is not made up with a burst). When all is done, one
 * JSON object is printed on stdout:
 *
 *   {"mode":"fork","made":N,"failed":F,"workers":[pid,...],"pid":P,
 *    "start_ns":S,"end_ns":E,"elapsed_s":X,"rate_per_s":R}
 *
 * `made` counts children that were created, `failed` children that did not exit 0 (an exec
 * that failed exits 127), start_ns/end_ns are CLOCK_MONOTONIC (the clock of the kernel's
 * event stamps). `workers` are the parents of every child (in the paced modes, the storm
 * itself), so a consumer can pick the storm's events by parent pid. Exit status: 0, 1 on an error,
 * 2 on bad usage.
 *
 * --hold keeps those pids from being recycled while the consumer counts: the exited
 * workers stay zombies (waited for with WNOWAIT), and after printing the storm waits for
 * end of file on stdin before reaping them and exiting.
 *
 * Build: gcc -std=c11 -Wall -Wextra -Werror -O2 -o storm storm.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 64
/* Children a worker keeps in flight before it waits for one. */
#define IN_FLIGHT 8

enum mode { MODE_FORK, MODE_EXEC, MODE_PACED, MODE_PACED_EXEC };

struct tally {
    long made;
    long failed;
};

static uint64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void usage(void) {
    fprintf(stderr,
            "usage: storm [--hold] fork N PARALLEL\n"
            "       storm [--hold] exec N PARALLEL PATH [ARGS...]\n"
            "       storm [--hold] paced N INTERVAL_US\n"
            "       storm [--hold] paced-exec N INTERVAL_US PATH [ARGS...]\n");
    exit(2);
}

static long parse_count(const char *text, long max) {
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < 0 || value > max) usage();
    return value;
}

static void sleep_us(long us) {
    struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Sleeps until CLOCK_MONOTONIC reaches `deadline_ns`. */
static void sleep_until_ns(uint64_t deadline_ns) {
    struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000u),
                          .tv_nsec = (long)(deadline_ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* Reaps one child, counting it as failed unless it exited 0. Returns 0 when none is left. */
static int reap_one(struct tally *t) {
    int status;
    pid_t pid;
    do {
        pid = waitpid(-1, &status, 0);
    } while (pid < 0 && errno == EINTR);
    if (pid < 0) return 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) t->failed++;
    return 1;
}

/* Forks `count` children; each runs _exit(0) or execv(path, argv). */
static void run_worker(long count, enum mode mode, char **argv, long interval_us,
                       struct tally *t) {
    int paced = mode == MODE_PACED || mode == MODE_PACED_EXEC;
    long in_flight = 0;
    long max_in_flight = paced ? 1 : IN_FLIGHT;
    uint64_t next_ns = monotonic_ns();
    for (long i = 0; i < count; i++) {
        if (in_flight >= max_in_flight) {
            if (reap_one(t)) in_flight--;
        }
        pid_t pid = fork();
        if (pid == 0) {
            if (mode == MODE_EXEC || mode == MODE_PACED_EXEC) {
                execv(argv[0], argv);
                _exit(127);
            }
            _exit(0);
        }
        if (pid < 0) {
            /* Out of processes for a moment (EAGAIN): reap, retry the same child. */
            if (in_flight > 0 && reap_one(t)) in_flight--;
            else sleep_us(1000);
            i--;
            continue;
        }
        t->made++;
        in_flight++;
        if (paced) {
            if (reap_one(t)) in_flight--;
            if (i + 1 == count) break;
            next_ns += (uint64_t)interval_us * 1000u;
            uint64_t now = monotonic_ns();
            if (next_ns > now) sleep_until_ns(next_ns);
            else next_ns = now;
        }
    }
    while (in_flight > 0 && reap_one(t)) in_flight--;
}

int main(int argc, char **argv) {
    int hold = 0;
    if (argc > 1 && strcmp(argv[1], "--hold") == 0) {
        hold = 1;
        argv++;
        argc--;
    }
    if (argc < 4) usage();
    enum mode mode;
    if (strcmp(argv[1], "fork") == 0 && argc == 4) mode = MODE_FORK;
    else if (strcmp(argv[1], "exec") == 0 && argc >= 5) mode = MODE_EXEC;
    else if (strcmp(argv[1], "paced") == 0 && argc == 4) mode = MODE_PACED;
    else if (strcmp(argv[1], "paced-exec") == 0 && argc >= 5) mode = MODE_PACED_EXEC;
    else usage();

    long total = parse_count(argv[2], 100000000L);
    long workers = 1, interval_us = 0;
    int paced = mode == MODE_PACED || mode == MODE_PACED_EXEC;
    if (paced) interval_us = parse_count(argv[3], 10000000L);
    else workers = parse_count(argv[3], MAX_WORKERS);
    if (workers < 1) usage();
    char **exec_argv = mode == MODE_EXEC || mode == MODE_PACED_EXEC ? argv + 4 : NULL;

    /* One tally per worker, shared with the parent. */
    struct tally *tallies = mmap(NULL, sizeof(struct tally) * MAX_WORKERS,
                                 PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (tallies == MAP_FAILED) {
        perror("storm: mmap");
        return 1;
    }
    memset(tallies, 0, sizeof(struct tally) * MAX_WORKERS);
    signal(SIGCHLD, SIG_DFL);

    pid_t pids[MAX_WORKERS];
    pid_t self = getpid();
    uint64_t start = monotonic_ns();
    if (paced) {
        pids[0] = getpid();
        run_worker(total, mode, exec_argv, interval_us, &tallies[0]);
    } else {
        for (long w = 0; w < workers; w++) {
            long share = total / workers + (w < total % workers ? 1 : 0);
            pid_t pid = fork();
            if (pid < 0) {
                perror("storm: fork");
                for (long k = 0; k < w; k++) kill(pids[k], SIGKILL);
                return 1;
            }
            if (pid == 0) {
                /* Die with the storm: a storm killed on a timeout leaves no worker behind. */
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != self) _exit(1);
                run_worker(share, mode, exec_argv, 0, &tallies[w]);
                _exit(0);
            }
            pids[w] = pid;
        }
        for (long w = 0; w < workers; w++) {
            siginfo_t info;
            /* With --hold, wait without reaping: the zombie keeps its pid. */
            while (waitid(P_PID, (id_t)pids[w], &info, WEXITED | (hold ? WNOWAIT : 0)) < 0 &&
                   errno == EINTR) {
            }
        }
    }
    uint64_t end = monotonic_ns();

    long made = 0, failed = 0;
    for (long w = 0; w < workers; w++) {
        made += tallies[w].made;
        failed += tallies[w].failed;
    }
    double elapsed = (double)(end - start) / 1e9;
    printf("{\"mode\":\"%s\",\"made\":%ld,\"failed\":%ld,\"workers\":[", argv[1], made, failed);
    for (long w = 0; w < workers; w++) printf("%s%d", w == 0 ? "" : ",", (int)pids[w]);
    printf("],\"pid\":%d,\"start_ns\":%llu,\"end_ns\":%llu,\"elapsed_s\":%.6f,"
           "\"rate_per_s\":%.1f}\n",
           (int)getpid(), (unsigned long long)start, (unsigned long long)end, elapsed,
           elapsed > 0 ? (double)made / elapsed : 0.0);
    fflush(stdout);
    if (hold) {
        char buf[256];
        for (;;) {
            ssize_t r = read(STDIN_FILENO, buf, sizeof buf);
            if (r > 0 || (r < 0 && errno == EINTR)) continue;
            break; /* end of file (or stdin unusable): the consumer is done */
        }
        if (!paced) {
            for (long w = 0; w < workers; w++) {
                while (waitpid(pids[w], NULL, 0) < 0 && errno == EINTR) {
                }
            }
        }
    }
    return 0;
}
