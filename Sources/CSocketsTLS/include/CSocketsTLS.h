// A narrow shim over OpenSSL 3, bound at run time: `dlopen("libssl.so.3")` on first use, so
// building needs no OpenSSL headers and a machine without libssl fails at the first TLS call
// with a message, never at build or load time. The types are opaque pointers; the few
// constants used are OpenSSL 3's stable ABI values, declared in tls.c.
#ifndef CSOCKETS_TLS_H
#define CSOCKETS_TLS_H

#include <stddef.h>
#include <stdint.h>

/// Loads and binds libssl/libcrypto once per process. 0 on success; else -1 and `error`
/// holds why (the library or a symbol missing).
int cstls_load(char *error, size_t length);

/// SSL_get_error's answers the Swift side acts on.
enum {
    CSTLS_OK = 0,
    CSTLS_ERROR_SSL = 1,
    CSTLS_WANT_READ = 2,
    CSTLS_WANT_WRITE = 3,
    CSTLS_ERROR_SYSCALL = 5,
    CSTLS_ZERO_RETURN = 6,
};

/// A context: client (server = 0) or server; TLS 1.2 at least; peer verification on
/// (`verify`: 0 none, 1 peer, 2 peer and require a certificate — for a server).
void *cstls_ctx_new(int server, int verify);
void cstls_ctx_free(void *ctx);
/// The system trust store (SSL_CERT_FILE / SSL_CERT_DIR honoured). 1 on success.
int cstls_ctx_default_trust(void *ctx);
/// A CA file (PEM) to trust. 1 on success.
int cstls_ctx_trust_file(void *ctx, const char *path);
/// A certificate chain file and its private key (PEM). 1 on success.
int cstls_ctx_certificate(void *ctx, const char *chain, const char *key);
/// ALPN: `wire` in the protocol's length-prefixed form, offered (client) and chosen from
/// (server). `kept` must outlive the context: made by cstls_protocols_new, freed by the caller
/// after cstls_ctx_free. 1 on success.
void *cstls_protocols_new(const unsigned char *wire, unsigned int length);
void cstls_protocols_free(void *kept);
int cstls_ctx_alpn(void *ctx, void *kept);

/// A session over two memory BIOs, in client or server state; `host` (client, may be NULL):
/// SNI and the name the certificate must match.
void *cstls_new(void *ctx, int server, const char *host, int verifyHost);
void cstls_free(void *ssl);

/// SSL_do_handshake / SSL_read / SSL_write / SSL_shutdown, each answering with SSL_get_error
/// (CSTLS_OK when done); `count` gets the bytes moved.
int cstls_handshake(void *ssl);
int cstls_read(void *ssl, void *buffer, int length, int *count);
int cstls_write(void *ssl, const void *buffer, int length, int *count);
int cstls_shutdown(void *ssl);
int cstls_pending(void *ssl);

/// The memory BIOs: bytes received from the socket go in; bytes to send come out.
int cstls_feed(void *ssl, const void *data, int length);
int cstls_outgoing(void *ssl);
int cstls_take(void *ssl, void *buffer, int length);
/// End of stream from the peer (the input BIO then reads EOF).
void cstls_feed_eof(void *ssl);

/// Session resumption (client): a context that keeps each connection's newest session; take
/// it (NULL: none new; the caller then owns it and frees it with cstls_session_free), offer
/// one to a connection before its handshake, and ask whether the handshake resumed.
void cstls_ctx_resume(void *ctx);
void *cstls_take_session(void *ssl);
void cstls_set_session(void *ssl, void *session);
void cstls_session_free(void *session);
int cstls_resumed(void *ssl);

/// After a failure: the certificate verification result (0: ok) and its text.
long cstls_verify_result(void *ssl);
const char *cstls_verify_text(long result);
/// The oldest queued OpenSSL error (0: none), its reason code and text; the queue is cleared.
unsigned long cstls_error(char *text, size_t length, int *reason);
void cstls_clear_errors(void);
/// A TLS alert's name ("bad certificate", ...).
const char *cstls_alert_text(int alert);
/// The negotiated protocol ("TLSv1.3"), ALPN (length in `length`, NULL if none).
const char *cstls_version(void *ssl);
const unsigned char *cstls_alpn_selected(void *ssl, unsigned int *length);

#endif
