// The async benchmarks' load generator, the same for every server, one thread on epoll.
//
// aload PORT N SECONDS SERVERPID (A1-A3, ping-pong): N connections, each a closed loop of
// 64-byte round trips. A second of warm-up, then SECONDS measured. Prints one JSON object:
// round trips/s, p50/p99/p99.9 latency (µs), the server's CPU per round trip (µs, from
// /proc/PID/stat over the measured window: clock ticks, so measure for seconds), its RSS (KiB),
// and the round trips of the whole run, warm-up included (for system calls per round trip).
//
// aload idle PORT N TIMEOUT SERVERPID (A4, N idle connections): reads the server's RSS, opens N
// connections (N + 64 descriptors: fails if RLIMIT_NOFILE's hard limit is lower), each doing one
// 64-byte round trip as soon as it is open (so its receive, with its timeout, is armed; at most
// 8 await their replies), waits 1 s after the last reply and reads the RSS again:
// bytes_per_conn = (after - before) / N. idle_cpu_pct: the server's CPU (% of one core) from then
// until TIMEOUT - 1 s after the last reply, or 0.1 s before the first reply's TIMEOUT if that is
// sooner (idle_s long; null if empty: use TIMEOUT >= 3; spread_s is first to last reply). Then
// waits, until TIMEOUT + 10 s after the last reply, for the server to close every connection
// (end of stream or reset): closed counts those it closed; a connection's lateness is when its
// close was seen minus (its reply's arrival, the kernel's receive timestamp, + TIMEOUT), and
// early counts closes more than 1 ms before that (a margin for the clocks; late_min_ms is exact).
// late_* are over the closed ones (null if none). TIMEOUT 0: a server without a timeout;
// measures idle CPU for 5 s and waits for no close (closed and early then count closes seen
// anyway, which should be none). Sockets are bound as in churn.
//
// aload churn PORT CONCURRENCY SECONDS SERVERPID (A5, connection churn): CONCURRENCY concurrent
// clients (non-blocking connects), each a loop of connect, send 64 B, receive 64 B, close. Each
// socket is bound first (IP_BIND_ADDRESS_NO_PORT) to a source address rotating over 127.0.0.2 ..
// 127.0.0.254, so the client's TIME_WAITs (it closes first) spread over 253 addresses' ports,
// whatever the sysctls. A second of warm-up, then SECONDS measured. Prints per_s (connections
// completed per second), cpu_us (server CPU per connection, /proc/PID/stat over the window),
// p50_us/p99_us (from connect to the reply received) and all (connections completed in the
// whole run, warm-up included). A failed connection (refused, reset, closed early) is reported on
// stderr with exit status 1.
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

static int pingpong(int argc, char **argv) {
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

// Raises RLIMIT_NOFILE's soft limit to the hard one; fails, naming the limit, if that is not
// enough for `need` descriptors.
static int nofile(long need, const char *what) {
    struct rlimit rl; getrlimit(RLIMIT_NOFILE, &rl); rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)need > rl.rlim_cur) {
        fprintf(stderr, "aload: %s needs %ld descriptors (its count + 64), over RLIMIT_NOFILE: soft %llu, hard %llu "
                "(ulimit -n / ulimit -Hn); lower the count or raise the limit\n",
                what, need, (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
        return -1;
    }
    return 0;
}
// Milliseconds to wait for epoll_wait until `until`, rounded up (never wakes early), capped.
static int ms_until(double until, double t, int cap) {
    double d = (until - t) * 1e3;
    if (d <= 0) return 0;
    if (d >= cap) return cap;
    int ms = (int)d;
    return ms < d ? ms + 1 : ms;
}
static int cmpd(const void *a, const void *b) { double x = *(double *)a, y = *(double *)b; return x < y ? -1 : x > y; }

// A TCP socket bound to the next source address of 127.0.0.2 .. 127.0.0.254, its port left to
// connect (IP_BIND_ADDRESS_NO_PORT: unique per 4-tuple): the client's TIME_WAITs spread over 253
// addresses' ephemeral ports, whatever the sysctls say.
static int bound_src = 2;
static int bound_socket(int flags) {
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
    if (fd < 0) return -1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in src = { .sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(0x7f000000u | bound_src) };
    bound_src = bound_src == 254 ? 2 : bound_src + 1;
    if (bind(fd, (void *)&src, sizeof src)) { int e = errno; close(fd); errno = e; return -1; }
    return fd;
}

// Returns the kernel's timestamp of the last segment recvmsg read, moved to CLOCK_MONOTONIC,
// or -1 if it has none.
static double rx_stamp(struct msghdr *mh) {
    struct cmsghdr *cm = CMSG_FIRSTHDR(mh);
    for (; cm; cm = CMSG_NXTHDR(mh, cm)) if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) break;
    if (!cm) return -1;
    struct timespec ts, rt; memcpy(&ts, CMSG_DATA(cm), sizeof ts);
    clock_gettime(CLOCK_REALTIME, &rt); double mono = now();
    return mono - ((rt.tv_sec - ts.tv_sec) + (rt.tv_nsec - ts.tv_nsec) / 1e9);
}
// The kernel turns receive timestamps on with deferred work: a TCP pair of our own, its client
// asking for them (and kept open, so that they stay on), exchanges a byte every millisecond
// until one comes stamped (up to 1 s). Returns 0 once they are on.
static int rx_stamps_on(void) {
    int one = 1, ok = -1;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) }; socklen_t len = sizeof a;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), s = -1;
    if (l < 0 || c < 0 || bind(l, (void *)&a, sizeof a) || listen(l, 1) || getsockname(l, (void *)&a, &len)) goto out;
    setsockopt(c, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    if (connect(c, (void *)&a, sizeof a) || (s = accept(l, NULL, NULL)) < 0) goto out;
    for (int i = 0; i < 1000 && ok; i++) {
        char b = 0; union { char b[CMSG_SPACE(sizeof(struct timespec)) * 2]; struct cmsghdr align; } cb;
        struct iovec iov = { .iov_base = &b, .iov_len = 1 };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b, .msg_controllen = sizeof cb.b };
        if (send(s, &b, 1, MSG_NOSIGNAL) != 1 || recvmsg(c, &mh, 0) != 1) break;
        if (rx_stamp(&mh) >= 0) ok = 0; else usleep(1000);
    }
out:
    if (l >= 0) close(l);
    if (s >= 0) close(s);
    return ok;  // c stays open
}

static int idle(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: aload idle PORT N TIMEOUT SERVERPID\n"); return 64; }
    int port = atoi(argv[2]), n = atoi(argv[3]); double tmo = atof(argv[4]); int pid = atoi(argv[5]);
    if (n <= 0 || tmo < 0) { fprintf(stderr, "usage: aload idle PORT N TIMEOUT SERVERPID (N > 0, TIMEOUT >= 0)\n"); return 64; }
    long rss0 = rss_of(pid); double cpu_start = cpu_of(pid);
    if (rss0 < 0 || cpu_start < 0) { fprintf(stderr, "aload: cannot read /proc/%d\n", pid); return 1; }
    if (nofile((long)n + 64, "aload idle N")) return 1;
    if (rx_stamps_on()) fprintf(stderr, "aload idle: the kernel's receive timestamps did not come on\n");
    int ep = epoll_create1(0);
    int *fds = calloc(n, sizeof(int)), *got = calloc(n, sizeof(int));
    char *state = calloc(n, 1);  // 0 awaiting its reply, 1 idle, 2 closed by the server
    double *reply = calloc(n, sizeof(double)), *late = calloc(n, sizeof(double));
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    char msg[64]; memset(msg, 'x', sizeof msg); int one = 1;
    // Each connection does its round trip as soon as it is open (a server's timeout runs from
    // its first receive, at accept), at most WINDOW connections awaiting their replies, so the
    // server's accept queue never fills (no 1 s SYN retransmits). A reply's time is the kernel's
    // receive timestamp (SO_TIMESTAMPNS, CLOCK_REALTIME, moved to CLOCK_MONOTONIC when read): on
    // loopback, the moment the server's send handed it over, before the server armed its next
    // receive. So a server that is never early is never seen early, however late this client
    // gets to the reply (a reply without one: epoll's report). Each connection is one-shot in epoll, re-armed after its reply: its
    // close is then reported once, as EPOLLRDHUP (or EPOLLHUP/EPOLLERR for a reset), and seen
    // with no system call of the client's (no recv, no close) while the closes are timed.
    enum { WINDOW = 8 };
    int next = 0;
    // One loop through every phase: replies; +1 s: RSS and CPU; TIMEOUT - 1 s after the last
    // reply (or 5 s later without a timeout): CPU; then closes until TIMEOUT + 10 s.
    struct epoll_event evs[512]; char buf[4096];
    int replies = 0, closed = 0, early = 0, unstamped = 0, phase = 0;  // phase 0 replies, 1 to the RSS, 2 to the CPU, 3 to the closes
    double reply_deadline = now() + 30 + n / 500.0, first_reply = 0, last_reply = 0, t_rss = 0, t_cpu = 0, t_end = 0;
    double t0 = 0, t1 = 0, c0 = 0, c1 = 0; long rss1 = -1; int cpu_measured = 0;
    for (;;) {
        for (; phase == 0 && next < n && next - replies < WINDOW; next++) {
            int fd = fds[next] = bound_socket(0);
            if (fd < 0) { fprintf(stderr, "aload idle: socket/bind %d: %s\n", next, strerror(errno)); return 1; }
            if (connect(fd, (void *)&a, sizeof a)) { fprintf(stderr, "aload idle: connect %d: %s\n", next, strerror(errno)); return 1; }
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
            int fl = 1; ioctl(fd, FIONBIO, &fl);
            struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.u32 = next };
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
            if (send(fd, msg, 64, MSG_NOSIGNAL) != 64) { fprintf(stderr, "aload idle: send %d: %s\n", next, strerror(errno)); return 1; }
        }
        double t = now();
        if (phase == 0 && replies == n) {
            phase = 1; t_rss = last_reply + 1; t_end = last_reply + tmo + 10;
        }
        if (phase == 1 && t >= t_rss) {
            rss1 = rss_of(pid); c0 = cpu_of(pid); t0 = now();
            if (closed > 0) fprintf(stderr, "aload idle: %d connections were closed before the RSS was read\n", closed);
            t_cpu = tmo > 0 ? last_reply + tmo - 1 : t0 + 5;
            if (tmo > 0 && t_cpu > first_reply + tmo - 0.1) t_cpu = first_reply + tmo - 0.1;  // idle: before the first timeout
            if (tmo == 0) t_end = t_cpu;
            phase = 2;
        }
        if (phase == 2 && (t >= t_cpu || t_cpu <= t0)) {
            if (t_cpu > t0) { c1 = cpu_of(pid); t1 = now(); cpu_measured = 1; }
            phase = 3;
        }
        if (phase == 3 && (t >= t_end || (tmo > 0 && closed == n))) break;
        if (phase == 0 && t > reply_deadline) {
            fprintf(stderr, "aload idle: %d of %d replies still missing after %.0f s\n", n - replies, n, 30 + n / 500.0);
            return 1;
        }
        double until = phase == 0 ? reply_deadline : phase == 1 ? t_rss : phase == 2 ? t_cpu : t_end;
        int k = epoll_wait(ep, evs, 512, ms_until(until, t, 1000));
        double tk = now();  // epoll's report: the closest stamp of an arrival this client has
        for (int j = 0; j < k; j++) {
            int i = evs[j].data.u32; uint32_t e = evs[j].events;
            int seen_close = state[i] == 1 && (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR));
            for (; !seen_close;) {
                union { char b[CMSG_SPACE(sizeof(struct timespec)) * 2]; struct cmsghdr align; } cb;
                struct iovec iov = { .iov_base = buf, .iov_len = sizeof buf };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b, .msg_controllen = sizeof cb.b };
                ssize_t r = recvmsg(fds[i], &mh, 0);
                if (r > 0) {
                    if (state[i] == 0 && (got[i] += r) >= 64) {
                        double at = tk, k = rx_stamp(&mh);  // the kernel's stamp of the reply's arrival, else epoll's report
                        if (k <= tk && k > tk - 1) at = k; else unstamped++;
                        state[i] = 1; reply[i] = at;
                        if (at > last_reply) last_reply = at;
                        if (replies++ == 0 || at < first_reply) first_reply = at;
                    }
                    continue;
                }
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) break;
                if (r < 0 && errno != ECONNRESET) { fprintf(stderr, "aload idle: recv %d: %s\n", i, strerror(errno)); return 1; }
                if (state[i] == 0) {
                    fprintf(stderr, "aload idle: the server closed connection %d before its reply (%s)\n", i, r == 0 ? "end of stream" : "reset");
                    return 1;
                }
                seen_close = 1;  // the reply and the close in one report
                break;
            }
            if (seen_close) {  // closed by the server
                late[closed++] = tk - (reply[i] + tmo);
                if (tmo == 0 || tk - (reply[i] + tmo) < -1e-3) early++;
                state[i] = 2;
                continue;
            }
            struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.u32 = i };
            epoll_ctl(ep, EPOLL_CTL_MOD, fds[i], &ev);  // re-armed: its reply's rest, or its close
        }
    }
    char p50[32] = "null", p99[32] = "null", pmax[32] = "null", pmin[32] = "null", cpu[32] = "null";
    if (closed > 0 && tmo > 0) {
        qsort(late, closed, sizeof(double), cmpd);
        snprintf(p50, sizeof p50, "%.3f", late[closed / 2] * 1e3);
        snprintf(p99, sizeof p99, "%.3f", late[closed * 99 / 100] * 1e3);
        snprintf(pmax, sizeof pmax, "%.3f", late[closed - 1] * 1e3);
        snprintf(pmin, sizeof pmin, "%.3f", late[0] * 1e3);
    }
    if (unstamped) fprintf(stderr, "aload idle: %d replies without the kernel's timestamp, stamped at epoll's report\n", unstamped);
    if (tmo > 0 && last_reply - first_reply >= tmo - 1)
        fprintf(stderr, "aload idle: the replies spread over %.2f s, not under TIMEOUT - 1 s: closes may have begun before "
                "the RSS was read, and no idle CPU could be measured\n", last_reply - first_reply);
    if (cpu_measured) snprintf(cpu, sizeof cpu, "%.2f", (c1 - c0) / (t1 - t0) * 100);
    printf("{\"n\": %d, \"rss_before_kib\": %ld, \"rss_after_kib\": %ld, \"bytes_per_conn\": %.1f, \"idle_cpu_pct\": %s, "
           "\"idle_s\": %.2f, \"closed\": %d, \"early\": %d, \"late_p50_ms\": %s, \"late_p99_ms\": %s, \"late_max_ms\": %s, "
           "\"late_min_ms\": %s, \"spread_s\": %.3f}\n",
           n, rss0, rss1, (rss1 - rss0) * 1024.0 / n, cpu, cpu_measured ? t1 - t0 : 0.0, closed, early, p50, p99, pmax, pmin, last_reply - first_reply);
    return 0;
}

struct client { int fd, got; char sent; double start; };

static void churn_fail(int i, const char *what, int err) {
    fprintf(stderr, "aload churn: client %d: %s: %s\n", i, what, strerror(err));
    exit(1);
}
// Starts client i's next connection: bound to the next source address, connecting without
// blocking, in epoll edge-triggered.
static void churn_start(int ep, struct client *c, int i, const struct sockaddr_in *dst, const char *msg) {
    int fd = bound_socket(SOCK_NONBLOCK);
    if (fd < 0) churn_fail(i, "socket/bind", errno);
    c->fd = fd; c->got = 0; c->sent = 0; c->start = now();
    if (connect(fd, (void *)dst, sizeof *dst) == 0) {
        if (send(fd, msg, 64, MSG_NOSIGNAL) != 64) churn_fail(i, "send", errno);
        c->sent = 1;
    } else if (errno != EINPROGRESS) {
        churn_fail(i, errno == EADDRNOTAVAIL ? "connect (no free source port)" : "connect", errno);
    }
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u32 = i };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)) churn_fail(i, "epoll_ctl", errno);
}

static int churn(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: aload churn PORT CONCURRENCY SECONDS SERVERPID\n"); return 64; }
    int port = atoi(argv[2]), n = atoi(argv[3]); double seconds = atof(argv[4]); int pid = atoi(argv[5]);
    if (n <= 0 || seconds <= 0) { fprintf(stderr, "usage: aload churn PORT CONCURRENCY SECONDS SERVERPID (both > 0)\n"); return 64; }
    if (cpu_of(pid) < 0) { fprintf(stderr, "aload: cannot read /proc/%d\n", pid); return 1; }
    if (nofile((long)n + 64, "aload churn CONCURRENCY")) return 1;
    int ep = epoll_create1(0);
    struct client *cs = calloc(n, sizeof *cs);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    char msg[64]; memset(msg, 'x', sizeof msg);
    size_t cap = 1 << 24; float *lat = malloc(cap * sizeof(float)); size_t nl = 0;
    for (int i = 0; i < n; i++) churn_start(ep, &cs[i], i, &a, msg);
    struct epoll_event evs[512]; char buf[256];
    double warm = now() + 1.0, end = warm + seconds, c0 = -1; long conns = 0, all = 0; int measuring = 0;
    for (;;) {
        double t = now();
        if (!measuring && t >= warm) { measuring = 1; c0 = cpu_of(pid); conns = 0; nl = 0; warm = t; }
        if (t >= end) break;
        int k = epoll_wait(ep, evs, 512, ms_until(measuring ? end : warm, t, 100));
        for (int j = 0; j < k; j++) {
            int i = evs[j].data.u32; struct client *c = &cs[i]; uint32_t e = evs[j].events;
            if (!c->sent) {
                if (e & (EPOLLERR | EPOLLHUP)) {
                    int err = 0; socklen_t len = sizeof err;
                    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                    churn_fail(i, "connect", err ? err : ECONNRESET);
                }
                if (!(e & EPOLLOUT)) continue;
                if (send(c->fd, msg, 64, MSG_NOSIGNAL) != 64) churn_fail(i, "send", errno);
                c->sent = 1;
                continue;  // the reply is a later edge
            }
            for (;;) {
                ssize_t r = recv(c->fd, buf, sizeof buf, 0);
                if (r > 0) { if ((c->got += r) >= 64) break; continue; }
                if (r == 0) { fprintf(stderr, "aload churn: client %d: the server closed before the reply (%d of 64 bytes)\n", i, c->got); exit(1); }
                if (errno == EAGAIN || errno == EINTR) break;
                churn_fail(i, "recv", errno);
            }
            if (c->got < 64) continue;
            double t2 = now();
            all++;
            if (measuring) { conns++; if (nl < cap) lat[nl++] = (t2 - c->start) * 1e6; }
            close(c->fd);
            churn_start(ep, c, i, &a, msg);
        }
    }
    double c1 = cpu_of(pid), elapsed = now() - warm;
    if (conns == 0) { fprintf(stderr, "aload churn: no connection completed\n"); return 1; }
    qsort(lat, nl, sizeof(float), cmp);
    printf("{\"per_s\": %.1f, \"cpu_us\": %.4f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"all\": %ld}\n",
           conns / elapsed, (c1 - c0) / conns * 1e6, lat[nl / 2], lat[nl * 99 / 100], all);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "idle") == 0) return idle(argc, argv);
    if (argc > 1 && strcmp(argv[1], "churn") == 0) return churn(argc, argv);
    return pingpong(argc, argv);
}
