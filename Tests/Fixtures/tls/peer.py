"""TLS peers for the tests, on 127.0.0.1 only; Python's ssl module as the independent side.

peer.py MODE [ARGS]: prints the port it listens on (server modes) as its first line, serves
one connection, and exits; every wait is bounded (the test also runs it under `timeout`).
  echo CERT KEY [CLIENT_CA]  TLS server: echoes what it reads until EOF (requires a client
                             certificate signed by CLIENT_CA when given)
  echoes N CERT KEY [1.2]    the same, for N connections one after another, with one context
                             (so that a client can resume the session the first one gave);
                             prints "full"/"resumed", the TLS version and the SNI name sent
                             for each; with 1.2, TLS 1.2 at most
  replies N CERT KEY         N connections: reads one message, sends it back and closes without
                             close_notify (as http.server does); prints "full"/"resumed" each
  client PORT CA             TLS client of our server: sends b"ping", prints what comes back
  silent                     accepts, reads, never answers
  http                       answers whatever comes with an HTTP/1.1 400 and closes
  eof                        reads the ClientHello and closes
  drip UPSTREAM DELAY_MS     relays to 127.0.0.1:UPSTREAM, the replies one byte every DELAY_MS
  collect CERT KEY           TLS server: reads until the client's close_notify (or EOF), then
                             sends all of it back (after the client's half-close), then
                             close_notify; prints the count
  tell PORT CA TEXT [CERT KEY]  TLS client of our server (with a client certificate if given):
                             sends TEXT, then close_notify, waits for the server's, prints "told"
  half UPSTREAM COUNT        relays, but only the first COUNT bytes of the replies, then silence
"""
import os, socket, ssl, sys, threading, time

def listen():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    s.settimeout(30)
    print(s.getsockname()[1], flush=True)
    return s

def relay(src, dst, per_byte_delay=0.0, limit=None):
    sent = 0
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if limit is not None:
                data = data[: max(0, limit - sent)]
            if per_byte_delay:
                for b in data:
                    dst.sendall(bytes([b]))
                    time.sleep(per_byte_delay)
            elif data:
                dst.sendall(data)
            sent += len(data)
            if limit is not None and sent >= limit:
                time.sleep(30)
                break
    except OSError:
        pass

def echo_until_end(s):
    """Sends back what `s` reads, until the end of its stream."""
    while True:
        data = s.recv(65536)
        if not data:
            break
        s.sendall(data)

def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "client":
        port, ca = int(args[0]), args[1]
        ctx = ssl.create_default_context(cafile=ca)
        with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"ping")
                print(s.recv(100).decode(), flush=True)
        return
    if mode == "tell":
        port, ca, text = int(args[0]), args[1], args[2]
        ctx = ssl.create_default_context(cafile=ca)
        if len(args) > 4:
            ctx.load_cert_chain(args[3], args[4])
        with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
            s = ctx.wrap_socket(raw, server_hostname="localhost")
            s.sendall(text.encode())
            s.unwrap()  # close_notify, then the server's
        print("told", flush=True)
        return
    server = listen()
    if mode == "echoes":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args[1], args[2])
        if len(args) > 3 and args[3] == "1.2":
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        names = []
        ctx.sni_callback = lambda s, name, c: names.append(name)
        for _ in range(int(args[0])):
            conn, _ = server.accept()
            conn.settimeout(20)
            names.clear()
            try:
                with ctx.wrap_socket(conn, server_side=True) as s:
                    print("resumed" if s.session_reused else "full", s.version(), names[0] if names else None, flush=True)
                    echo_until_end(s)
            except (ssl.SSLError, OSError) as e:
                print("server:", e, file=sys.stderr, flush=True)
        return
    if mode == "replies":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args[1], args[2])
        for _ in range(int(args[0])):
            conn, _ = server.accept()
            conn.settimeout(20)
            try:
                s = ctx.wrap_socket(conn, server_side=True)
                print("resumed" if s.session_reused else "full", flush=True)
                s.sendall(s.recv(65536))
                s.shutdown(socket.SHUT_WR)  # a TCP FIN, no close_notify
                s.close()
            except (ssl.SSLError, OSError) as e:
                print("server:", e, file=sys.stderr, flush=True)
        return
    conn, _ = server.accept()
    conn.settimeout(20)
    if mode == "echo":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args[0], args[1])
        if len(args) > 2:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(args[2])
        try:
            with ctx.wrap_socket(conn, server_side=True) as s:
                echo_until_end(s)
        except (ssl.SSLError, OSError) as e:
            print("server:", e, file=sys.stderr, flush=True)
    elif mode == "collect":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args[0], args[1])
        try:
            s = ctx.wrap_socket(conn, server_side=True)
            got = bytearray()
            while True:
                data = s.recv(65536)
                if not data:
                    break
                got += data
            s.sendall(bytes(got))
            print(len(got), flush=True)
            try:
                s.unwrap()
            except (ssl.SSLError, OSError):
                pass  # the client may have closed once it had everything
            s.close()
        except (ssl.SSLError, OSError) as e:
            print("server:", e, file=sys.stderr, flush=True)
    elif mode == "silent":
        try:
            conn.recv(65536)
            time.sleep(20)
        except OSError:
            pass
    elif mode == "http":
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        conn.close()
    elif mode == "eof":
        conn.recv(65536)
        conn.close()
    elif mode in ("drip", "half"):
        upstream = socket.create_connection(("127.0.0.1", int(args[0])), timeout=20)
        threading.Thread(target=relay, args=(conn, upstream), daemon=True).start()
        if mode == "drip":
            relay(upstream, conn, per_byte_delay=int(args[1]) / 1000.0)
        else:
            relay(upstream, conn, limit=int(args[1]))
    else:
        sys.exit("unknown mode " + mode)

main()
