// Does the system call made just before a timed sleep change how late the sleep wakes?
// On the 2-vCPU VM of RESULTS.md it does: a ppoll() that follows a failed non-blocking
// accept4() wakes 30-50 µs sooner than one that follows a recv(), or nothing. The library
// tries an accept or a receive once before it waits (MSG_DONTWAIT), so its timed-out
// accepts look better than its timed-out receives in W4; this shows the kernel does that
// to plain C too. Each round sleeps 10 ms four ways, interleaved, asking ppoll for the time
// left minus its 50 µs slack, as the library does.
//
//   gcc -O2 Benchmarks/c/wakeup.c -o /tmp/wakeup && /tmp/wakeup     (about 20 seconds)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#define ROUNDS 500

static long long now_ns(void) {
    struct timespec t; clock_gettime(CLOCK_BOOTTIME, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}
static int cmp(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b; return x < y ? -1 : x > y;
}

int main(void) {
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET; a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int ls = socket(AF_INET, SOCK_STREAM, 0);  // a connection nobody accepts: c never gets data
    if (ls < 0 || bind(ls, (void *)&a, sizeof a) || listen(ls, 16) || getsockname(ls, (void *)&a, &len)) return 2;
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (void *)&a, sizeof a)) return 2;
    a.sin_port = 0;
    int idle = socket(AF_INET, SOCK_STREAM, 0);  // a listener nobody connects to
    if (idle < 0 || bind(idle, (void *)&a, sizeof a) || listen(idle, 16)) return 2;
    fcntl(idle, F_SETFL, O_NONBLOCK);
    static long long late[4][ROUNDS];
    const char *name[4] = {"recv, then ppoll", "ppoll alone (connection)", "accept4, then ppoll", "ppoll alone (listener)"};
    for (int i = 0; i < ROUNDS; i++) {
        for (int k = 0; k < 4; k++) {
            int fd = k < 2 ? c : idle; char b;
            long long end = now_ns() + 10000000;
            if (k == 0) recv(fd, &b, 1, MSG_DONTWAIT);
            if (k == 2) accept4(fd, NULL, NULL, SOCK_CLOEXEC);
            for (long long left; (left = end - now_ns()) > 0;) {
                long long span = left > 100000 ? left - 50000 : left;
                struct timespec ts = {span / 1000000000, span % 1000000000};
                struct pollfd p = {fd, POLLIN, 0};
                ppoll(&p, 1, &ts, NULL);
            }
            late[k][i] = now_ns() - end;
        }
    }
    for (int k = 0; k < 4; k++) {
        double sum = 0;
        for (int i = 0; i < ROUNDS; i++) sum += late[k][i];
        qsort(late[k], ROUNDS, sizeof late[k][0], cmp);
        printf("%-26s late: mean %6.1f  p99 %6.1f  min %5.1f µs\n", name[k], sum / ROUNDS / 1e3,
               late[k][ROUNDS * 99 / 100] / 1e3, late[k][0] / 1e3);
    }
    return 0;
}
