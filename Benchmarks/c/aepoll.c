// The async benchmarks' limit: an edge-triggered epoll echo server in C, one thread, reading
// until EAGAIN (what edge-triggering requires). Prints "PORT n", then serves until killed.
// Usage: aepoll [TIMEOUT]
// TIMEOUT (seconds, fractions allowed; default 0 = none): close a connection that has read
// nothing for that long. Every connection has the same timeout, so the classic O(1) scheme:
// a doubly linked list of connections in order of last read (a read moves its connection to
// the tail, stamped with CLOCK_MONOTONIC), epoll_wait's timeout from the head's deadline
// (rounded up to the millisecond: never early), expired heads closed. The state is an array
// indexed by fd. With no TIMEOUT the loop is the original one, untouched (serve_plain).
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

static void serve_plain(int l, int ep) {
    int one = 1;
    struct epoll_event evs[256];
    char buf[4096];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == l) {
                for (;;) {
                    int c = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event ce = { .events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.fd = c };
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
                continue;
            }
            for (;;) {
                ssize_t r = recv(fd, buf, sizeof buf, 0);
                if (r > 0) { send(fd, buf, r, MSG_NOSIGNAL); continue; }
                if (r == 0 || (errno != EAGAIN && errno != EINTR)) { close(fd); }
                break;
            }
        }
    }
}

// The idle list: connections in order of last read, linked by fd.
struct conn { double last; int prev, next, on; };
static struct conn *cs;
static int ncs, head = -1, tail = -1;

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void unlink_conn(int fd) {
    struct conn *c = &cs[fd];
    if (c->prev >= 0) cs[c->prev].next = c->next; else head = c->next;
    if (c->next >= 0) cs[c->next].prev = c->prev; else tail = c->prev;
    c->on = 0;
}
static void append(int fd, double t) {
    struct conn *c = &cs[fd];
    c->last = t; c->prev = tail; c->next = -1; c->on = 1;
    if (tail >= 0) cs[tail].next = fd; else head = fd;
    tail = fd;
}
static void drop(int fd) {
    if (fd < ncs && cs[fd].on) unlink_conn(fd);
    close(fd);
}

static void serve_timed(int l, int ep, double timeout) {
    int one = 1;
    struct epoll_event evs[256];
    char buf[4096];
    ncs = 1024;
    cs = calloc(ncs, sizeof *cs);
    if (!cs) { perror("calloc"); exit(1); }
    for (;;) {
        int wait = -1;
        if (head >= 0) {
            double d = (cs[head].last + timeout - now()) * 1e3;
            wait = d <= 0 ? 0 : d >= 1e9 ? 1000000000 : (int)d + ((int)d < d);
        }
        int n = epoll_wait(ep, evs, 256, wait);
        double t = now();
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == l) {
                for (;;) {
                    int c = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    if (c >= ncs) {
                        int m = ncs; while (m <= c) m *= 2;
                        struct conn *g = realloc(cs, m * sizeof *cs);
                        if (!g) { close(c); continue; }
                        memset(g + ncs, 0, (m - ncs) * sizeof *g);
                        cs = g; ncs = m;
                    }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event ce = { .events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.fd = c };
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                    append(c, t);
                }
                continue;
            }
            int got = 0;
            for (;;) {
                ssize_t r = recv(fd, buf, sizeof buf, 0);
                if (r > 0) { send(fd, buf, r, MSG_NOSIGNAL); got = 1; continue; }
                if (r == 0 || (errno != EAGAIN && errno != EINTR)) { drop(fd); got = 0; }
                break;
            }
            if (got && cs[fd].on) {  // read: to the tail, stamped now
                double tr = now();
                if (tail != fd) { unlink_conn(fd); append(fd, tr); } else cs[fd].last = tr;
            }
        }
        while (head >= 0 && cs[head].last + timeout <= t) drop(head);
    }
}

int main(int argc, char **argv) {
    double timeout = 0; char *end = NULL;
    if (argc > 2 || (argc == 2 && ((timeout = strtod(argv[1], &end)) < 0 || end == argv[1] || *end))) {
        fprintf(stderr, "usage: aepoll [TIMEOUT]  (idle timeout in seconds, default 0: none)\n");
        return 64;
    }
    int port = 0;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(l, (void *)&a, sizeof a) || listen(l, 4096)) { perror("bind/listen"); return 1; }
    socklen_t len = sizeof a;
    getsockname(l, (void *)&a, &len);
    printf("PORT %d\n", ntohs(a.sin_port));
    fflush(stdout);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.fd = l };
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    if (timeout > 0) serve_timed(l, ep, timeout);
    else serve_plain(l, ep);
}
