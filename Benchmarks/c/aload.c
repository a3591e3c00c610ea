// The async benchmarks' load generator, the same for every server: N connections, each a
// closed loop of 64-byte round trips, one thread on epoll. A second of warm-up, then SECONDS
// measured. Usage: aload PORT N SECONDS SERVERPID. Prints one JSON object: round trips/s,
// p50/p99/p99.9 latency (µs), the server's CPU per round trip (µs, from /proc/PID/stat over
// the measured window: clock ticks, so measure for seconds), its RSS (KiB), and the round
// trips of the whole run, warm-up included (for system calls per round trip).
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <time.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <arpa/inet.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static double cpu_of(int pid) {
    char path[64]; snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r"); if (!f) return -1;
    char buf[1024]; size_t n = fread(buf, 1, sizeof buf - 1, f); fclose(f); buf[n] = 0;
    char *p = strrchr(buf, ')'); unsigned long ut = 0, st = 0; int field = 2;
    for (char *tok = strtok(p + 2, " "); tok; tok = strtok(NULL, " ")) {
        field++;
        if (field == 14) ut = strtoul(tok, NULL, 10);
        if (field == 15) { st = strtoul(tok, NULL, 10); break; }
    }
    return (ut + st) / (double)sysconf(_SC_CLK_TCK);
}
static long rss_of(int pid) {
    char path[64]; snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r"); if (!f) return -1;
    char line[256]; long kib = -1;
    while (fgets(line, sizeof line, f)) if (sscanf(line, "VmRSS: %ld", &kib) == 1) break;
    fclose(f);
    return kib;
}
static int cmp(const void *a, const void *b) { float x = *(float *)a, y = *(float *)b; return x < y ? -1 : x > y; }

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: aload PORT N SECONDS SERVERPID\n"); return 64; }
    int port = atoi(argv[1]), n = atoi(argv[2]); double seconds = atof(argv[3]); int pid = atoi(argv[4]);
    struct rlimit rl; getrlimit(RLIMIT_NOFILE, &rl); rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl);
    int ep = epoll_create1(0);
    int *fds = calloc(n, sizeof(int)); double *sent = calloc(n, sizeof(double));
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int one = 1;
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fds[i], (void *)&a, sizeof a)) { perror("connect"); return 1; }
        setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int fl = 1; ioctl(fds[i], FIONBIO, &fl);
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    char msg[64]; memset(msg, 'x', sizeof msg);
    size_t cap = 1 << 24; float *lat = malloc(cap * sizeof(float)); size_t nl = 0;
    for (int i = 0; i < n; i++) { sent[i] = now(); send(fds[i], msg, 64, MSG_NOSIGNAL); }
    struct epoll_event evs[512]; char buf[4096];
    double warm = now() + 1.0, end = warm + seconds; double c0 = -1; long trips = 0, all = 0; int measuring = 0;
    for (;;) {
        double t = now();
        if (!measuring && t >= warm) { measuring = 1; c0 = cpu_of(pid); trips = 0; nl = 0; warm = t; }
        if (t >= end) break;
        int k = epoll_wait(ep, evs, 512, 100);
        for (int j = 0; j < k; j++) {
            int i = evs[j].data.u32;
            ssize_t r = recv(fds[i], buf, sizeof buf, 0);
            if (r <= 0) { if (r == 0) { fprintf(stderr, "server closed %d\n", i); return 1; } continue; }
            double t2 = now();
            all++;
            if (measuring) { trips++; if (nl < cap) lat[nl++] = (t2 - sent[i]) * 1e6; }
            sent[i] = t2; send(fds[i], msg, 64, MSG_NOSIGNAL);
        }
    }
    double c1 = cpu_of(pid), elapsed = now() - warm;
    qsort(lat, nl, sizeof(float), cmp);
    if (trips == 0) { fprintf(stderr, "no round trip completed\n"); return 1; }
    printf("{\"per_s\": %.1f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, \"cpu_us\": %.4f, \"rss_kib\": %ld, \"all_trips\": %ld}\n",
           trips / elapsed, lat[nl / 2], lat[nl * 99 / 100], lat[nl * 999 / 1000], (c1 - c0) / trips * 1e6, rss_of(pid), all);
    return 0;
}
