// The limit for the TLS workloads (T1-T4 in ../run): OpenSSL 3 driven from C, with the
// engine over two memory BIOs and the socket's own recv/send — the fewest system calls the
// engine allows (TLS.md: 13.6 per handshake against 26 with OpenSSL's socket BIO). The same
// configuration as SocketsTLS: TLS 1.2 at least (1.3 negotiated), the client verifying the
// server's certificate against the test CA and its name ("localhost", also sent as SNI).
//
// Built against libssl.so.3 without OpenSSL's headers (the official swift images do not ship
// libssl-dev): the few prototypes and constants are declared here, OpenSSL 3's stable ABI.
//
//   ctls server tls-handshake MODE       prints "PORT n"; serves handshakes one at a time
//   ctls server tls-bulk MODE            one connection: reads the length-prefixed stream, acks;
//                                        prints its CPU time when the client has closed
//   ctls server tls-drip DELAY_MS        a peer that drips a handshake: reads the ClientHello,
//                                        then sends a record header and its body a byte every
//                                        DELAY_MS (a thread per connection)
//   ctls client tls-handshake PORT COUNT MODE   COUNT/10 + COUNT sequential connect +
//                                        handshake + close; p50/p99 of the last COUNT, CPU
//   ctls client tls-bulk PORT BYTES MODE        BYTES in 64 KiB writes, waits for the ack
//   ctls client tls-late PORT COUNT MODE SECONDS  handshakes against the drip peer with a
//                                        deadline SECONDS after connect: lateness
// MODE: none (blocking recv/send) | deadline (non-blocking, ppoll for the time left of a
// deadline 5 s after connect, or SECONDS for tls-late). Certificates: $BENCH_TLS_DIR/
// {ca.pem, good.pem, good.key}, made by Tests/Fixtures/tls/make.sh. Results: one JSON object.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

// OpenSSL 3 (ssl.h, bio.h): opaque types, the calls used, and their constants.
typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_method_st SSL_METHOD;
typedef struct bio_st BIO;
typedef struct bio_method_st BIO_METHOD;
typedef struct ssl_cipher_st SSL_CIPHER;
const SSL_METHOD *TLS_method(void);
SSL_CTX *SSL_CTX_new(const SSL_METHOD *);
long SSL_CTX_ctrl(SSL_CTX *, int, long, void *);
int SSL_CTX_load_verify_locations(SSL_CTX *, const char *, const char *);
int SSL_CTX_use_certificate_chain_file(SSL_CTX *, const char *);
int SSL_CTX_use_PrivateKey_file(SSL_CTX *, const char *, int);
void SSL_CTX_set_verify(SSL_CTX *, int, void *);
SSL *SSL_new(SSL_CTX *);
void SSL_free(SSL *);
void SSL_set_bio(SSL *, BIO *, BIO *);
void SSL_set_connect_state(SSL *);
void SSL_set_accept_state(SSL *);
long SSL_ctrl(SSL *, int, long, void *);
int SSL_set1_host(SSL *, const char *);
int SSL_do_handshake(SSL *);
int SSL_read_ex(SSL *, void *, size_t, size_t *);
int SSL_write_ex(SSL *, const void *, size_t, size_t *);
int SSL_shutdown(SSL *);
int SSL_get_error(const SSL *, int);
BIO *SSL_get_rbio(const SSL *);
BIO *SSL_get_wbio(const SSL *);
const SSL_CIPHER *SSL_get_current_cipher(const SSL *);
const char *SSL_CIPHER_get_name(const SSL_CIPHER *);
const char *SSL_get_version(const SSL *);
const BIO_METHOD *BIO_s_mem(void);
BIO *BIO_new(const BIO_METHOD *);
int BIO_write(BIO *, const void *, int);
int BIO_read(BIO *, void *, int);
long BIO_ctrl(BIO *, int, long, void *);
void ERR_print_errors_fp(FILE *);
#define SSL_CTRL_SET_TLSEXT_HOSTNAME 55
#define SSL_CTRL_SET_MIN_PROTO_VERSION 123
#define TLS1_2_VERSION 0x0303
#define SSL_FILETYPE_PEM 1
#define SSL_VERIFY_NONE 0
#define SSL_VERIFY_PEER 1
#define SSL_ERROR_WANT_READ 2
#define SSL_ERROR_ZERO_RETURN 6
#define BIO_CTRL_PENDING 10
#define BIO_C_SET_BUF_MEM_EOF_RETURN 130

static void die(const char *what) { perror(what); exit(2); }
static void die_ssl(const char *what) { fprintf(stderr, "%s failed\n", what); ERR_print_errors_fp(stderr); exit(2); }
static int64_t now_ns(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}
static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b; return x < y ? -1 : x > y;
}
static double cpu_us(void) {
    struct rusage u; getrusage(RUSAGE_SELF, &u);
    return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e6 + u.ru_utime.tv_usec + u.ru_stime.tv_usec;
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
static int dial(int port) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); if (s < 0) die("socket");
    struct sockaddr_in a = loopback(port);
    if (connect(s, (void *)&a, sizeof a)) die("connect");
    return s;
}
static const char *fixture(const char *name) {
    static char path[4][4096]; static int next;
    const char *dir = getenv("BENCH_TLS_DIR");
    if (!dir) { fprintf(stderr, "BENCH_TLS_DIR is not set\n"); exit(2); }
    char *p = path[next++ % 4];
    snprintf(p, sizeof path[0], "%s/%s", dir, name);
    return p;
}

static SSL_CTX *context(int server) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_method()); if (!ctx) die_ssl("SSL_CTX_new");
    SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MIN_PROTO_VERSION, TLS1_2_VERSION, NULL);
    if (server) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        if (SSL_CTX_use_certificate_chain_file(ctx, fixture("good.pem")) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, fixture("good.key"), SSL_FILETYPE_PEM) != 1) die_ssl("certificate");
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (SSL_CTX_load_verify_locations(ctx, fixture("ca.pem"), NULL) != 1) die_ssl("CA");
    }
    return ctx;
}

static SSL *session(SSL_CTX *ctx, int server) {
    SSL *ssl = SSL_new(ctx); if (!ssl) die_ssl("SSL_new");
    BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
    BIO_ctrl(in, BIO_C_SET_BUF_MEM_EOF_RETURN, -1, NULL);
    BIO_ctrl(out, BIO_C_SET_BUF_MEM_EOF_RETURN, -1, NULL);
    SSL_set_bio(ssl, in, out);
    if (server) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
        SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, 0, (void *)"localhost");
        if (SSL_set1_host(ssl, "localhost") != 1) die_ssl("SSL_set1_host");
    }
    return ssl;
}

enum { DONE = 0, FAILED = -1, TIMED_OUT = -2, END = -3 };

// Waits until fd is ready for `events` or the deadline passes (0: it passed). ppoll for the
// time left: the kernel's timer never fires early; a wake-up before the deadline looks again.
static int wait_until(int fd, short events, int64_t deadline) {
    for (;;) {
        int64_t left = deadline - now_ns();
        if (left <= 0) return 0;
        struct pollfd p = {fd, events, 0};
        struct timespec ts = {left / 1000000000, left % 1000000000};
        int r = ppoll(&p, 1, &ts, NULL);
        if (r > 0) return 1;
        if (r < 0 && errno != EINTR) die("ppoll");
    }
}

// deadline < 0: blocking calls. Otherwise sends do not wait (MSG_DONTWAIT) and each wait is
// a ppoll for the time left — before a recv (in a handshake every wait follows a send), so
// the socket stays blocking and costs no fcntl.
static int send_all(int fd, const char *b, size_t n, int64_t deadline) {
    while (n > 0) {
        if (deadline >= 0) {
            ssize_t r = send(fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                if (!wait_until(fd, POLLOUT, deadline)) return TIMED_OUT;
                continue;
            }
            if (r < 0) return FAILED;
            b += r; n -= (size_t)r;
        } else {
            ssize_t r = send(fd, b, n, MSG_NOSIGNAL);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) return FAILED;
            b += r; n -= (size_t)r;
        }
    }
    return DONE;
}
static ssize_t receive(int fd, char *b, size_t n, int64_t deadline) {
    for (;;) {
        if (deadline >= 0 && !wait_until(fd, POLLIN, deadline)) return TIMED_OUT;
        ssize_t r = recv(fd, b, n, 0);
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (r < 0) return FAILED;
        if (r == 0) return END;
        return r;
    }
}

static char wire[256 << 10];  // ciphertext in or out, one connection at a time per thread

// Sends what the engine has made, in one send.
static int flush(SSL *ssl, int fd, int64_t deadline) {
    BIO *out = SSL_get_wbio(ssl);
    long pending;
    while ((pending = BIO_ctrl(out, BIO_CTRL_PENDING, 0, NULL)) > 0) {
        int n = BIO_read(out, wire, pending < (long)sizeof wire ? (int)pending : (int)sizeof wire);
        int r = send_all(fd, wire, (size_t)n, deadline);
        if (r != DONE) return r;
    }
    return DONE;
}

// Receives once and feeds the engine.
static int feed(SSL *ssl, int fd, int64_t deadline) {
    ssize_t n = receive(fd, wire, sizeof wire, deadline);
    if (n < 0) return (int)n;
    BIO_write(SSL_get_rbio(ssl), wire, (int)n);
    return DONE;
}

static int handshake(SSL *ssl, int fd, int64_t deadline) {
    for (;;) {
        int rc = SSL_do_handshake(ssl);
        int f = flush(ssl, fd, deadline);
        if (f != DONE) return f;
        if (rc == 1) return DONE;
        if (SSL_get_error(ssl, rc) != SSL_ERROR_WANT_READ) return FAILED;
        int r = feed(ssl, fd, deadline);
        if (r != DONE) return r;
    }
}

// Reads up to n bytes of application data: > 0, or END (close_notify or EOF), FAILED.
static long read_some(SSL *ssl, int fd, char *b, size_t n, int64_t deadline) {
    for (;;) {
        size_t got = 0;
        int rc = SSL_read_ex(ssl, b, n, &got);
        if (rc == 1) return (long)got;
        int e = SSL_get_error(ssl, rc);
        if (e == SSL_ERROR_ZERO_RETURN) return END;
        if (e != SSL_ERROR_WANT_READ) return FAILED;
        int r = feed(ssl, fd, deadline);
        if (r != DONE) return r;
    }
}

static int write_all(SSL *ssl, int fd, const char *b, size_t n, int64_t deadline) {
    size_t done = 0;
    if (SSL_write_ex(ssl, b, n, &done) != 1 || done != n) return FAILED;
    return flush(ssl, fd, deadline);
}

// close_notify (if the handshake completed), then close(2).
static void finish(SSL *ssl, int fd, int handshaken) {
    if (handshaken) {
        SSL_shutdown(ssl);
        flush(ssl, fd, -1);
    }
    close(fd);
    SSL_free(ssl);
}

static int64_t deadline_for(const char *mode, double seconds) {
    if (strcmp(mode, "deadline") == 0) return now_ns() + (int64_t)(seconds * 1e9);
    if (strcmp(mode, "none") == 0) return -1;
    fprintf(stderr, "unknown mode %s\n", mode); exit(2);
}

// The drip peer's connection: the ClientHello read, then a handshake record's header and its
// body a byte every `delay` ms, for at most 10 s or until the client has gone.
struct drip { int fd; int delay_ms; };
static void *drip(void *arg) {
    struct drip d = *(struct drip *)arg; free(arg);
    char hello[4096];
    struct timeval tv = {5, 0};
    setsockopt(d.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (recv(d.fd, hello, sizeof hello, 0) > 0) {
        static const unsigned char header[] = {0x16, 0x03, 0x03, 0x40, 0x00, 0x02};  // 16 KiB record: ServerHello
        int64_t end = now_ns() + 10000000000LL;
        for (size_t i = 0; now_ns() < end; i++) {
            unsigned char byte = i < sizeof header ? header[i] : 0;
            if (send(d.fd, &byte, 1, MSG_NOSIGNAL) != 1) break;
            usleep((useconds_t)d.delay_ms * 1000);
        }
    }
    close(d.fd);
    return NULL;
}

static void server(const char *workload, const char *mode) {
    int port, l = listener(&port);
    printf("PORT %d\n", port); fflush(stdout);
    if (strcmp(workload, "tls-drip") == 0) {
        int delay = atoi(mode);
        for (;;) {
            int c = accept4(l, NULL, NULL, SOCK_CLOEXEC); if (c < 0) die("accept");
            struct drip *d = malloc(sizeof *d); d->fd = c; d->delay_ms = delay;
            pthread_t t;
            if (pthread_create(&t, NULL, drip, d)) die("pthread_create");
            pthread_detach(t);
        }
    }
    SSL_CTX *ctx = context(1);
    static char plain[64 << 10];
    if (strcmp(workload, "tls-handshake") == 0) {
        for (;;) {
            int c = accept4(l, NULL, NULL, SOCK_CLOEXEC); if (c < 0) die("accept");
            SSL *ssl = session(ctx, 1);
            int ok = handshake(ssl, c, deadline_for(mode, 5)) == DONE;
            if (ok) while (read_some(ssl, c, plain, sizeof plain, -1) > 0) {}  // until the client's close
            finish(ssl, c, ok);
        }
    }
    if (strcmp(workload, "tls-bulk") != 0) { fprintf(stderr, "unknown workload %s\n", workload); exit(2); }
    int c = accept4(l, NULL, NULL, SOCK_CLOEXEC); if (c < 0) die("accept");
    SSL *ssl = session(ctx, 1);
    if (handshake(ssl, c, -1) != DONE) die_ssl("handshake");
    // An 8-byte length, then that many bytes.
    uint64_t total = 0, got = 0;
    size_t header = 0;
    for (;;) {
        long n = read_some(ssl, c, plain, sizeof plain, -1);
        if (n <= 0) { fprintf(stderr, "bulk: stream ended early\n"); exit(2); }
        size_t skip = 0;
        while (header < 8 && skip < (size_t)n) ((char *)&total)[header++] = plain[skip++];
        got += (uint64_t)n - skip;
        if (header == 8 && got >= total) break;
    }
    if (write_all(ssl, c, "k", 1, -1) != DONE) die("ack");
    double cpu = cpu_us();
    while (read_some(ssl, c, plain, sizeof plain, -1) > 0) {}
    finish(ssl, c, 1);
    printf("{\"server_cpu_s\": %.3f}\n", cpu / 1e6);
    exit(0);
}

static void client(const char *workload, int port, long count, const char *mode, double seconds) {
    SSL_CTX *ctx = context(0);
    if (strcmp(workload, "tls-handshake") == 0) {
        long warm = count / 10;
        int64_t *times = malloc(sizeof(int64_t) * (size_t)(count > 0 ? count : 1));
        double cpu0 = cpu_us();
        int64_t start = now_ns();
        for (long i = 0; i < warm + count; i++) {
            if (i == warm) { cpu0 = cpu_us(); start = now_ns(); }
            int64_t t0 = now_ns();
            int fd = dial(port);
            int64_t deadline = deadline_for(mode, 5);
            SSL *ssl = session(ctx, 0);
            if (handshake(ssl, fd, deadline) != DONE) die_ssl("handshake");
            finish(ssl, fd, 1);
            if (i >= warm) times[i - warm] = now_ns() - t0;
        }
        if (count == 0) { printf("{}\n"); return; }
        double cpu = (cpu_us() - cpu0) / count, wall = (now_ns() - start) / 1e9;
        qsort(times, (size_t)count, sizeof *times, cmp64);
        printf("{\"p50_us\": %.3f, \"p99_us\": %.3f, \"cpu_us\": %.3f, \"per_s\": %.3f}\n", times[count / 2] / 1e3,
               times[count * 99 / 100] / 1e3, cpu, count / wall);
    } else if (strcmp(workload, "tls-bulk") == 0) {
        int fd = dial(port);
        SSL *ssl = session(ctx, 0);
        if (handshake(ssl, fd, -1) != DONE) die_ssl("handshake");
        static char chunk[64 << 10];
        uint64_t total = (uint64_t)count, sent = 0;
        int64_t start = now_ns();
        if (write_all(ssl, fd, (char *)&total, 8, -1) != DONE) die("send");
        while (sent < total) {
            if (write_all(ssl, fd, chunk, sizeof chunk, -1) != DONE) die("send");
            sent += sizeof chunk;
        }
        char ack;
        if (read_some(ssl, fd, &ack, 1, -1) != 1 || ack != 'k') { fprintf(stderr, "no ack\n"); exit(2); }
        double gbps = sent / ((now_ns() - start) / 1e9) / 1e9;
        printf("{\"gbps\": %.3f, \"cpu_s\": %.3f}\n", gbps, cpu_us() / 1e6);
        fprintf(stderr, "%s %s\n", SSL_get_version(ssl), SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)));
        finish(ssl, fd, 1);
    } else if (strcmp(workload, "tls-late") == 0) {
        int64_t *late = malloc(sizeof(int64_t) * (size_t)(count > 0 ? count : 1));
        for (long i = 0; i < count; i++) {
            int fd = dial(port);
            int64_t deadline = deadline_for(mode, seconds);
            SSL *ssl = session(ctx, 0);
            int r = handshake(ssl, fd, deadline);
            if (r != TIMED_OUT) { fprintf(stderr, "expected a timeout, got %d\n", r); exit(2); }
            late[i] = now_ns() - deadline;
            finish(ssl, fd, 0);
        }
        if (count == 0) { printf("{}\n"); return; }
        double sum = 0;
        for (long i = 0; i < count; i++) sum += late[i];
        qsort(late, (size_t)count, sizeof *late, cmp64);
        printf("{\"mean_us\": %.3f, \"median_us\": %.3f, \"max_us\": %.3f, \"min_us\": %.3f}\n", sum / count / 1e3,
               late[count / 2] / 1e3, late[count - 1] / 1e3, late[0] / 1e3);
    } else {
        fprintf(stderr, "unknown workload %s\n", workload); exit(2);
    }
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 4 && strcmp(argv[1], "server") == 0) server(argv[2], argv[3]);
    else if (argc >= 6 && strcmp(argv[1], "client") == 0)
        client(argv[2], atoi(argv[3]), atol(argv[4]), argv[5], argc > 6 ? atof(argv[6]) : 0);
    else { fprintf(stderr, "usage: see the comment at the top of ctls.c\n"); return 64; }
    return 0;
}
