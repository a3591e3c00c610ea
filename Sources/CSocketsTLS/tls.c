// OpenSSL 3 bound at run time (see CSocketsTLS.h). Each function is looked up once by name
// with dlsym; the library is never unloaded. The constants are OpenSSL 3's ABI values
// (ssl.h, tls1.h, bio.h, x509_vfy.h), which do not change within a major version.
#include "CSocketsTLS.h"
#include <arpa/inet.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SSL_CTRL_SET_TLSEXT_HOSTNAME 55
#define SSL_CTRL_SET_MIN_PROTO_VERSION 123
#define TLSEXT_NAMETYPE_host_name 0
#define TLS1_2_VERSION 0x0303
#define SSL_FILETYPE_PEM 1
#define SSL_VERIFY_NONE 0
#define SSL_VERIFY_PEER 1
#define SSL_VERIFY_FAIL_IF_NO_PEER_CERT 2
#define BIO_CTRL_PENDING 10
#define BIO_C_SET_BUF_MEM_EOF_RETURN 130
#define SSL_OP_IGNORE_UNEXPECTED_EOF ((uint64_t)1 << 7)
#define SSL_CTRL_SET_SESS_CACHE_MODE 44
#define SSL_SESS_CACHE_CLIENT 0x0001
#define SSL_SESS_CACHE_SERVER 0x0002
#define SSL_SESS_CACHE_NO_INTERNAL_STORE 0x0300
#define OPENSSL_INIT_LOAD_SSL_STRINGS 0x00200000L
#define OPENSSL_INIT_LOAD_CRYPTO_STRINGS 0x00000002L

typedef void SSL;
typedef void SSL_CTX;
typedef void SSL_METHOD;
typedef void BIO;
typedef void BIO_METHOD;
typedef void SSL_SESSION;

static struct {
    int (*OPENSSL_init_ssl)(uint64_t, const void *);
    const SSL_METHOD *(*TLS_method)(void);
    SSL_CTX *(*SSL_CTX_new)(const SSL_METHOD *);
    void (*SSL_CTX_free)(SSL_CTX *);
    long (*SSL_CTX_ctrl)(SSL_CTX *, int, long, void *);
    uint64_t (*SSL_CTX_set_options)(SSL_CTX *, uint64_t);
    int (*SSL_CTX_set_default_verify_paths)(SSL_CTX *);
    int (*SSL_CTX_load_verify_locations)(SSL_CTX *, const char *, const char *);
    int (*SSL_CTX_use_certificate_chain_file)(SSL_CTX *, const char *);
    int (*SSL_CTX_use_PrivateKey_file)(SSL_CTX *, const char *, int);
    int (*SSL_CTX_check_private_key)(const SSL_CTX *);
    void (*SSL_CTX_set_verify)(SSL_CTX *, int, void *);
    int (*SSL_CTX_set_alpn_protos)(SSL_CTX *, const unsigned char *, unsigned int);
    void (*SSL_CTX_set_alpn_select_cb)(SSL_CTX *, void *, void *);
    SSL *(*SSL_new)(SSL_CTX *);
    void (*SSL_free)(SSL *);
    void (*SSL_set_bio)(SSL *, BIO *, BIO *);
    void (*SSL_set_connect_state)(SSL *);
    void (*SSL_set_accept_state)(SSL *);
    long (*SSL_ctrl)(SSL *, int, long, void *);
    int (*SSL_set1_host)(SSL *, const char *);
    int (*SSL_do_handshake)(SSL *);
    int (*SSL_read_ex)(SSL *, void *, size_t, size_t *);
    int (*SSL_write_ex)(SSL *, const void *, size_t, size_t *);
    int (*SSL_shutdown)(SSL *);
    int (*SSL_get_error)(const SSL *, int);
    int (*SSL_pending)(const SSL *);
    long (*SSL_get_verify_result)(const SSL *);
    const char *(*SSL_get_version)(const SSL *);
    void (*SSL_get0_alpn_selected)(const SSL *, const unsigned char **, unsigned int *);
    const char *(*SSL_alert_desc_string_long)(int);
    int (*SSL_select_next_proto)(unsigned char **, unsigned char *, const unsigned char *, unsigned int,
                                 const unsigned char *, unsigned int);
    const char *(*X509_verify_cert_error_string)(long);
    const BIO_METHOD *(*BIO_s_mem)(void);
    BIO *(*BIO_new)(const BIO_METHOD *);
    int (*BIO_write)(BIO *, const void *, int);
    int (*BIO_read)(BIO *, void *, int);
    long (*BIO_ctrl)(BIO *, int, long, void *);
    void (*SSL_CTX_sess_set_new_cb)(SSL_CTX *, int (*)(SSL *, SSL_SESSION *));
    int (*SSL_CTX_set_session_id_context)(SSL_CTX *, const unsigned char *, unsigned int);
    int (*SSL_set_ex_data)(SSL *, int, void *);
    void *(*SSL_get_ex_data)(const SSL *, int);
    int (*SSL_set_session)(SSL *, SSL_SESSION *);
    void (*SSL_SESSION_free)(SSL_SESSION *);
    int (*SSL_session_reused)(const SSL *);
    void *(*SSL_get0_param)(SSL *);
    int (*X509_VERIFY_PARAM_set1_ip_asc)(void *, const char *);
    BIO *(*SSL_get_rbio)(const SSL *);
    BIO *(*SSL_get_wbio)(const SSL *);
    unsigned long (*ERR_get_error)(void);
    void (*ERR_error_string_n)(unsigned long, char *, size_t);
    void (*ERR_clear_error)(void);
} f;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char loadError[256];

#define BIND(lib, name) \
    do { \
        *(void **)(&f.name) = dlsym(lib, #name); \
        if (!f.name) { snprintf(loadError, sizeof loadError, "%s not found in OpenSSL 3", #name); return; } \
    } while (0)

static void load(void) {
    void *crypto = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
    if (!crypto) { snprintf(loadError, sizeof loadError, "libcrypto.so.3: %s", dlerror()); return; }
    void *ssl = dlopen("libssl.so.3", RTLD_NOW | RTLD_LOCAL);
    if (!ssl) { snprintf(loadError, sizeof loadError, "libssl.so.3: %s", dlerror()); return; }
    BIND(ssl, OPENSSL_init_ssl);
    BIND(ssl, TLS_method);
    BIND(ssl, SSL_CTX_new);
    BIND(ssl, SSL_CTX_free);
    BIND(ssl, SSL_CTX_ctrl);
    BIND(ssl, SSL_CTX_set_options);
    BIND(ssl, SSL_CTX_set_default_verify_paths);
    BIND(ssl, SSL_CTX_load_verify_locations);
    BIND(ssl, SSL_CTX_use_certificate_chain_file);
    BIND(ssl, SSL_CTX_use_PrivateKey_file);
    BIND(ssl, SSL_CTX_check_private_key);
    BIND(ssl, SSL_CTX_set_verify);
    BIND(ssl, SSL_CTX_set_alpn_protos);
    BIND(ssl, SSL_CTX_set_alpn_select_cb);
    BIND(ssl, SSL_new);
    BIND(ssl, SSL_free);
    BIND(ssl, SSL_set_bio);
    BIND(ssl, SSL_set_connect_state);
    BIND(ssl, SSL_set_accept_state);
    BIND(ssl, SSL_ctrl);
    BIND(ssl, SSL_set1_host);
    BIND(ssl, SSL_do_handshake);
    BIND(ssl, SSL_read_ex);
    BIND(ssl, SSL_write_ex);
    BIND(ssl, SSL_shutdown);
    BIND(ssl, SSL_get_error);
    BIND(ssl, SSL_pending);
    BIND(ssl, SSL_get_verify_result);
    BIND(ssl, SSL_get_version);
    BIND(ssl, SSL_get0_alpn_selected);
    BIND(ssl, SSL_alert_desc_string_long);
    BIND(ssl, SSL_select_next_proto);
    BIND(ssl, SSL_CTX_sess_set_new_cb);
    BIND(ssl, SSL_CTX_set_session_id_context);
    BIND(ssl, SSL_set_ex_data);
    BIND(ssl, SSL_get_ex_data);
    BIND(ssl, SSL_set_session);
    BIND(ssl, SSL_SESSION_free);
    BIND(ssl, SSL_session_reused);
    BIND(ssl, SSL_get0_param);
    BIND(crypto, X509_VERIFY_PARAM_set1_ip_asc);
    BIND(ssl, SSL_get_rbio);
    BIND(ssl, SSL_get_wbio);
    BIND(crypto, X509_verify_cert_error_string);
    BIND(crypto, BIO_s_mem);
    BIND(crypto, BIO_new);
    BIND(crypto, BIO_write);
    BIND(crypto, BIO_read);
    BIND(crypto, BIO_ctrl);
    BIND(crypto, ERR_get_error);
    BIND(crypto, ERR_error_string_n);
    BIND(crypto, ERR_clear_error);
    if (f.OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL) != 1) {
        snprintf(loadError, sizeof loadError, "OPENSSL_init_ssl failed");
        return;
    }
    loadError[0] = 0;
}

int cstls_load(char *error, size_t length) {
    pthread_once(&once, load);  // loadError is written only inside it
    if (loadError[0] == 0) return 0;
    snprintf(error, length, "%s", loadError);
    return -1;
}

void *cstls_ctx_new(int server, int verify) {
    SSL_CTX *ctx = f.SSL_CTX_new(f.TLS_method());
    if (!ctx) return NULL;
    f.SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MIN_PROTO_VERSION, TLS1_2_VERSION, NULL);
    // A peer that closes without close_notify ends the stream, as the Swift side treats it
    // (Python's default too). Without this, OpenSSL takes it for a fatal error and marks the
    // session unresumable: every http.server-style peer would cost a full handshake.
    f.SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    int mode = verify == 0 ? SSL_VERIFY_NONE
             : verify == 1 ? SSL_VERIFY_PEER : (SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
    f.SSL_CTX_set_verify(ctx, mode, NULL);
    if (server) {
        // Resumption needs a session ID context when clients are verified; the same for all.
        f.SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"Sockets", 7);
    }
    return ctx;
}

// A client's sessions: OpenSSL hands each new one (TLS 1.2: at the end of the handshake;
// TLS 1.3: each ticket, after it) to this callback, which keeps the latest in the
// connection's slot for the Swift side to take. OpenSSL's own client cache is not used: the
// Swift side keys sessions by server name and address.
struct Slot {
    SSL_SESSION *session;
};

static int newSession(SSL *ssl, SSL_SESSION *session) {
    struct Slot *slot = f.SSL_get_ex_data(ssl, 0);
    if (!slot) return 0;  // not kept: OpenSSL frees it
    if (slot->session) f.SSL_SESSION_free(slot->session);
    slot->session = session;
    return 1;  // kept: ours to free
}

void cstls_ctx_resume(void *ctx) {
    f.SSL_CTX_ctrl(ctx, SSL_CTRL_SET_SESS_CACHE_MODE, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE, NULL);
    f.SSL_CTX_sess_set_new_cb(ctx, newSession);
}

void *cstls_take_session(void *ssl) {
    struct Slot *slot = f.SSL_get_ex_data(ssl, 0);
    if (!slot || !slot->session) return NULL;
    SSL_SESSION *session = slot->session;
    slot->session = NULL;
    return session;
}

void cstls_set_session(void *ssl, void *session) { f.SSL_set_session(ssl, session); }
void cstls_session_free(void *session) { f.SSL_SESSION_free(session); }
int cstls_resumed(void *ssl) { return f.SSL_session_reused(ssl); }

void cstls_ctx_free(void *ctx) { f.SSL_CTX_free(ctx); }
int cstls_ctx_default_trust(void *ctx) { return f.SSL_CTX_set_default_verify_paths(ctx); }
int cstls_ctx_trust_file(void *ctx, const char *path) { return f.SSL_CTX_load_verify_locations(ctx, path, NULL); }

int cstls_ctx_certificate(void *ctx, const char *chain, const char *key) {
    if (f.SSL_CTX_use_certificate_chain_file(ctx, chain) != 1) return 0;
    if (f.SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) return 0;
    return f.SSL_CTX_check_private_key(ctx);
}

struct Protocols {
    unsigned int length;
    unsigned char wire[];
};

// A server picks the first of its protocols the client offers (the list is kept with the context).
static int selectALPN(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                      unsigned int inlen, void *arg) {
    (void)ssl;
    const struct Protocols *ours = arg;
    unsigned char *chosen = NULL;
    unsigned char chosenLength = 0;
    if (f.SSL_select_next_proto(&chosen, &chosenLength, ours->wire, ours->length, in, inlen) != 1) return 3;  // NOACK
    *out = chosen;
    *outlen = chosenLength;
    return 0;  // SSL_TLSEXT_ERR_OK
}

void *cstls_protocols_new(const unsigned char *wire, unsigned int length) {
    struct Protocols *kept = malloc(sizeof(struct Protocols) + length);
    if (!kept) return NULL;
    kept->length = length;
    memcpy(kept->wire, wire, length);
    return kept;
}

void cstls_protocols_free(void *kept) { free(kept); }

int cstls_ctx_alpn(void *ctx, void *kept) {
    struct Protocols *protocols = kept;
    // Client: the list offered (0 is success here). Server: the callback chooses from it.
    if (f.SSL_CTX_set_alpn_protos(ctx, protocols->wire, protocols->length) != 0) return 0;
    f.SSL_CTX_set_alpn_select_cb(ctx, (void *)selectALPN, protocols);
    return 1;
}

void *cstls_new(void *ctx, int server, const char *host, int verifyHost) {
    SSL *ssl = f.SSL_new(ctx);
    if (!ssl) return NULL;
    BIO *in = f.BIO_new(f.BIO_s_mem());
    BIO *out = f.BIO_new(f.BIO_s_mem());
    if (!in || !out) { f.SSL_free(ssl); return NULL; }
    // An empty input BIO means "more to come" (retry), not end of file.
    f.BIO_ctrl(in, BIO_C_SET_BUF_MEM_EOF_RETURN, -1, NULL);
    f.BIO_ctrl(out, BIO_C_SET_BUF_MEM_EOF_RETURN, -1, NULL);
    f.SSL_set_bio(ssl, in, out);
    if (server) {
        f.SSL_set_accept_state(ssl);
    } else {
        f.SSL_set_connect_state(ssl);
        struct Slot *slot = calloc(1, sizeof(struct Slot));
        if (!slot || f.SSL_set_ex_data(ssl, 0, slot) != 1) { free(slot); f.SSL_free(ssl); return NULL; }
        unsigned char numeric[16];
        if (host && (inet_pton(AF_INET, host, numeric) == 1 || inet_pton(AF_INET6, host, numeric) == 1)) {
            // An address: no SNI (RFC 6066 allows only names), and the certificate must
            // carry it as an IP address.
            if (verifyHost && f.X509_VERIFY_PARAM_set1_ip_asc(f.SSL_get0_param(ssl), host) != 1) {
                cstls_free(ssl);
                return NULL;
            }
        } else if (host && host[0]) {
            f.SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, (void *)host);
            if (verifyHost && f.SSL_set1_host(ssl, host) != 1) { cstls_free(ssl); return NULL; }
        }
    }
    return ssl;
}

void cstls_free(void *ssl) {
    struct Slot *slot = f.SSL_get_ex_data(ssl, 0);
    f.SSL_free(ssl);
    if (slot) {
        if (slot->session) f.SSL_SESSION_free(slot->session);
        free(slot);
    }
}

static int answer(SSL *ssl, int rc) { return rc == 1 ? CSTLS_OK : f.SSL_get_error(ssl, rc); }

int cstls_handshake(void *ssl) { return answer(ssl, f.SSL_do_handshake(ssl)); }

int cstls_read(void *ssl, void *buffer, int length, int *count) {
    size_t n = 0;
    int rc = f.SSL_read_ex(ssl, buffer, (size_t)length, &n);
    *count = (int)n;
    return answer(ssl, rc);
}

int cstls_write(void *ssl, const void *buffer, int length, int *count) {
    size_t n = 0;
    int rc = f.SSL_write_ex(ssl, buffer, (size_t)length, &n);
    *count = (int)n;
    return answer(ssl, rc);
}

int cstls_shutdown(void *ssl) {
    int rc = f.SSL_shutdown(ssl);
    return rc >= 0 ? CSTLS_OK : f.SSL_get_error(ssl, rc);
}

int cstls_pending(void *ssl) { return f.SSL_pending(ssl); }

int cstls_feed(void *ssl, const void *data, int length) { return f.BIO_write(f.SSL_get_rbio(ssl), data, length); }
int cstls_outgoing(void *ssl) { return (int)f.BIO_ctrl(f.SSL_get_wbio(ssl), BIO_CTRL_PENDING, 0, NULL); }
int cstls_take(void *ssl, void *buffer, int length) { return f.BIO_read(f.SSL_get_wbio(ssl), buffer, length); }
void cstls_feed_eof(void *ssl) { f.BIO_ctrl(f.SSL_get_rbio(ssl), BIO_C_SET_BUF_MEM_EOF_RETURN, 0, NULL); }

long cstls_verify_result(void *ssl) { return f.SSL_get_verify_result(ssl); }
const char *cstls_verify_text(long result) { return f.X509_verify_cert_error_string(result); }

unsigned long cstls_error(char *text, size_t length, int *reason) {
    unsigned long first = f.ERR_get_error();
    if (first && text) f.ERR_error_string_n(first, text, length);
    if (reason) *reason = (int)(first & 0x7FFFFF);
    f.ERR_clear_error();
    return first;
}

void cstls_clear_errors(void) { f.ERR_clear_error(); }
const char *cstls_alert_text(int alert) { return f.SSL_alert_desc_string_long(alert); }
const char *cstls_version(void *ssl) { return f.SSL_get_version(ssl); }

const unsigned char *cstls_alpn_selected(void *ssl, unsigned int *length) {
    const unsigned char *data = NULL;
    f.SSL_get0_alpn_selected(ssl, &data, length);
    return data;
}
