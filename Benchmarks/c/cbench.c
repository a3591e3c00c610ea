// The physical limit: plain blocking sockets, poll(2) for timeouts. Same command line and
// output as the other implementations (see ../run):
//   cbench server pingpong|bulk|connect [plain|tuned|poll|rcvtimeo]  prints "PORT n", serves
//   cbench client pingpong PORT COUNT none|poll|rcvtimeo  64 B round trips, TCP_NODELAY
//   cbench client bulk PORT BYTES                       64 KiB writes, waits for the server's ack
//   cbench client connect PORT COUNT [none|rcvtimeo]    connect, wait for the server's close, close
// rcvtimeo: 5 s SO_RCVTIMEO/SO_SNDTIMEO, set once per socket before the call it bounds.
//   cbench precision recv|accept SECONDS COUNT THREADS poll|rcvtimeo
// Results: one JSON object on stdout.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) { perror(what); exit(2); }
static int64_t now_ns(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}
static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b; return x < y ? -1 : x > y;
}
static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET; a.sin_port = htons(port); a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}
static int listener(int *port) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); if (s < 0) die("socket");
    int one = 1; setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = loopback(0); socklen_t l = sizeof a;
    if (bind(s, (void *)&a, l) || listen(s, 128) || getsockname(s, (void *)&a, &l)) die("listen");
    *port = ntohs(a.sin_port); return s;
}
// "rcvtimeo" mode: a 5 s SO_RCVTIMEO / SO_SNDTIMEO, the kernel's own timeouts (no poll).
static void timeouts(int fd, int which) {
    struct timeval tv = {5, 0};
    if ((which & 1) && setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)) die("SO_RCVTIMEO");
    if ((which & 2) && setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv)) die("SO_SNDTIMEO");
}

// A connected socket; `kernel`: with the "rcvtimeo" timeouts, each set before the call it bounds.
static int dial_with(int port, int kernel) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); if (s < 0) die("socket");
    struct sockaddr_in a = loopback(port);
    if (kernel) timeouts(s, 2);
    if (connect(s, (void *)&a, sizeof a)) die("connect");
    if (kernel) timeouts(s, 1);
    return s;
}
static int dial(int port) { return dial_with(port, 0); }
static void nodelay(int s) { int one = 1; setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); }

// Waits for `events` until the absolute deadline, poll(2) in whole milliseconds rounded up.
// Returns 0 when the deadline passed.
static int wait_poll(int fd, short events, int64_t deadline) {
    for (;;) {
        int64_t left = deadline - now_ns();
        if (left <= 0) return 0;
        struct pollfd p = {fd, events, 0};
        int r = poll(&p, 1, (int)((left + 999999) / 1000000));
        if (r > 0) return 1;
        if (r < 0 && errno != EINTR) die("poll");
    }
}
static int read_full(int fd, char *b, size_t n, int use_poll) {
    size_t got = 0;
    while (got < n) {
        if (use_poll && !wait_poll(fd, POLLIN, now_ns() + 5000000000LL)) { fprintf(stderr, "timeout\n"); exit(3); }
        ssize_t r = recv(fd, b + got, n - got, 0);
        if (r == 0) return 0;
        if (r < 0) { if (errno == EINTR) continue; die("recv"); }
        got += r;
    }
    return 1;
}
static void write_full(int fd, const char *b, size_t n, int use_poll) {
    size_t sent = 0;
    while (sent < n) {
        if (use_poll && !wait_poll(fd, POLLOUT, now_ns() + 5000000000LL)) { fprintf(stderr, "timeout\n"); exit(3); }
        ssize_t r = send(fd, b + sent, n - sent, MSG_NOSIGNAL);
        if (r < 0) { if (errno == EINTR) continue; die("send"); }
        sent += r;
    }
}

static int server(const char *workload, const char *mode) {
    int port, ls = listener(&port);
    int kernel = mode && !strcmp(mode, "rcvtimeo");
    if (kernel) timeouts(ls, 1);
    printf("PORT %d\n", port); fflush(stdout);
    if (!strcmp(workload, "connect")) {
        for (;;) { int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC); if (c < 0) die("accept"); close(c); }
    }
    int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC); if (c < 0) die("accept");
    if (!strcmp(workload, "pingpong")) {
        nodelay(c);
        if (kernel) timeouts(c, 3);
        int use_poll = mode && !strcmp(mode, "poll");
        char b[64];
        while (read_full(c, b, 64, use_poll)) write_full(c, b, 64, use_poll);
    } else {  // bulk: read and discard until EOF, then ack with one byte
        int tuned = mode && !strcmp(mode, "tuned");
        size_t size = tuned ? 1 << 20 : 64 << 10;
        char *b = malloc(size);
        if (tuned) { int low = 512 << 10; setsockopt(c, SOL_SOCKET, SO_RCVLOWAT, &low, sizeof low); }
        for (;;) { ssize_t r = recv(c, b, size, 0); if (r == 0) break; if (r < 0 && errno != EINTR) die("recv"); }
        write_full(c, "k", 1, 0);
    }
    return 0;
}

static int client(const char *workload, int port, long count, const char *mode) {
    if (!strcmp(workload, "pingpong")) {
        int s = dial(port); nodelay(s);
        int use_poll = !strcmp(mode, "poll");
        if (!strcmp(mode, "rcvtimeo")) timeouts(s, 3);
        char b[64] = {1};
        long warm = count / 10;
        int64_t *rt = malloc(sizeof(int64_t) * (count + 1));
        for (long i = 0; i < warm + count; i++) {
            int64_t t0 = now_ns();
            write_full(s, b, 64, use_poll);
            if (!read_full(s, b, 64, use_poll)) die("eof");
            if (i >= warm) rt[i - warm] = now_ns() - t0;
        }
        close(s);
        if (count == 0) { printf("{}\n"); return 0; }
        qsort(rt, count, sizeof *rt, cmp64);
        printf("{\"median_us\": %.3f, \"p99_us\": %.3f}\n", rt[count / 2] / 1e3, rt[count * 99 / 100] / 1e3);
    } else if (!strcmp(workload, "bulk")) {
        int s = dial(port);
        char *b = calloc(1, 64 << 10);
        int64_t t0 = now_ns();
        for (long sent = 0; sent < count; sent += 64 << 10) write_full(s, b, 64 << 10, 0);
        shutdown(s, SHUT_WR);
        char k; if (!read_full(s, &k, 1, 0)) die("no ack");
        printf("{\"gbps\": %.3f}\n", count / ((now_ns() - t0) / 1e9) / 1e9);
    } else {  // connect
        int kernel = !strcmp(mode, "rcvtimeo");
        int64_t t0 = now_ns();
        for (long i = 0; i < count; i++) {
            int s = dial_with(port, kernel); char b;
            while (recv(s, &b, 1, 0) < 0 && errno == EINTR) {}
            close(s);
        }
        printf("{\"per_s\": %.1f}\n", count / ((now_ns() - t0) / 1e9));
    }
    return 0;
}

// W4: timed-out receives (on a connection that never gets data) or accepts (nobody connects).
struct job { int fd; int accept; int rcvtimeo; int64_t timeout; long count; int64_t start; int64_t *late; };
static void *precision_thread(void *arg) {
    struct job *j = arg;
    while (now_ns() < j->start) usleep(1000);
    for (long i = 0; i < j->count; i++) {
        int64_t t0 = now_ns(), end = t0 + j->timeout;
        if (j->rcvtimeo) {
            char b; int r = j->accept ? accept(j->fd, NULL, NULL) : (int)recv(j->fd, &b, 1, 0);
            if (r >= 0 || errno != EAGAIN) die("expected a timeout");
        } else {
            if (wait_poll(j->fd, POLLIN, end)) die("expected a timeout");
        }
        j->late[i] = now_ns() - end;
    }
    return NULL;
}
static int precision(const char *what, double seconds, long count, int threads, const char *mode) {
    int rcvtimeo = !strcmp(mode, "rcvtimeo"), accepting = !strcmp(what, "accept");
    struct job jobs[64]; pthread_t t[64];
    int64_t timeout = (int64_t)(seconds * 1e9), base = now_ns() + 20000000;
    int64_t *late = malloc(sizeof(int64_t) * count);
    for (int k = 0; k < threads; k++) {
        int port, ls = listener(&port), fd = ls;
        if (!accepting) { int c = dial(port); fd = c; }  // ls stays open: the connection lives
        if (rcvtimeo) { struct timeval tv = {timeout / 1000000000, (timeout % 1000000000) / 1000};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv); }
        jobs[k] = (struct job){fd, accepting, rcvtimeo, timeout, count / threads, base + timeout * k / threads, late + k * (count / threads)};
        pthread_create(&t[k], NULL, precision_thread, &jobs[k]);
    }
    for (int k = 0; k < threads; k++) pthread_join(t[k], NULL);
    long n = count / threads * threads;
    if (n == 0) { printf("{}\n"); return 0; }
    qsort(late, n, sizeof *late, cmp64);
    double sum = 0; for (long i = 0; i < n; i++) sum += late[i];
    printf("{\"mean_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f, \"min_us\": %.1f}\n",
           sum / n / 1e3, late[n * 99 / 100] / 1e3, late[n - 1] / 1e3, late[0] / 1e3);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "server")) return server(argv[2], argc > 3 ? argv[3] : NULL);
    if (argc >= 5 && !strcmp(argv[1], "client"))
        return client(argv[2], atoi(argv[3]), atol(argv[4]), argc > 5 ? argv[5] : "none");
    if (argc >= 7 && !strcmp(argv[1], "precision"))
        return precision(argv[2], atof(argv[3]), atol(argv[4]), atoi(argv[5]), argv[6]);
    fprintf(stderr, "usage: see the comment at the top of cbench.c\n");
    return 64;
}
