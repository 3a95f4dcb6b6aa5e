/*
 * sink - a Unix-socket client for the bench's many-clients phase that costs as little as a
 * client can: it reads procMonitor's lines in 64 KiB reads and only counts them.
 *
 *   sink PATH
 *
 * Counts lines, and lines that are `lost` events (they begin `{"event":"lost"`). On SIGUSR1
 * it prints "LINES LOST\n" to stdout; at the end of the stream it prints the same and exits
 * 0. Exits 1 when it cannot connect, 2 on bad usage.
 *
 * Why not the bench's own clients: a hundred of them share one Deno process, which then
 * needs more CPU than procMonitor to parse every line and falls behind, so the latency
 * measured would be the bench's. Separate processes that only count keep each client's
 * cost what a real, simple client's is; two of the bench's own clients still time lines.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static const char LOST[] = "{\"event\":\"lost\"";
static volatile sig_atomic_t asked;

static void on_usr1(int sig) {
    (void)sig;
    asked = 1;
}

static void report(unsigned long long lines, unsigned long long lost) {
    printf("%llu %llu\n", lines, lost);
    fflush(stdout);
}

int main(int argc, char **argv) {
    static char buf[64 * 1024];
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct sigaction sa = {.sa_handler = on_usr1};
    sigset_t usr1, open_mask;
    unsigned long long lines = 0, lost = 0;
    size_t at = 0; /* bytes of LOST matched at the start of the current line */
    int matching = 1; /* the current line may still begin with LOST */
    int fd;

    if (argc != 2 || strlen(argv[1]) >= sizeof(addr.sun_path)) {
        fprintf(stderr, "usage: sink PATH\n");
        return 2;
    }
    strcpy(addr.sun_path, argv[1]);
    /* SIGUSR1 is delivered only inside ppoll(), so a request is never missed between the
     * check of `asked` and the wait. */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, &open_mask);
    sigdelset(&open_mask, SIGUSR1); /* even if the parent had it blocked */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        fprintf(stderr, "sink: cannot connect to %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n;

        if (ppoll(&p, 1, NULL, &open_mask) < 0 && errno != EINTR)
            break;
        if (asked) {
            asked = 0;
            report(lines, lost);
        }
        if (p.revents == 0)
            continue;
        n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++) {
            char c = buf[i];

            if (c == '\n') {
                lines++;
                at = 0;
                matching = 1;
            } else if (matching) {
                if (c != LOST[at]) {
                    matching = 0;
                } else if (++at == sizeof(LOST) - 1) {
                    lost++;
                    matching = 0;
                }
            }
        }
    }
    report(lines, lost);
    return 0;
}
