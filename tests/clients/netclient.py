#!/usr/bin/env python3
"""Test client for Interlock's integration tests.

Takes one JSON spec argument, performs the network operation it names, and
prints one JSON line with what happened (errno on failure). Every operation
has a timeout so a test can never hang on it.
"""
import errno
import hashlib
import json
import os
import socket
import sys
import threading
import time

TIMEOUT = 10


def family(spec):
    return socket.AF_INET6 if spec.get("family") == "v6" else socket.AF_INET


def addr_of(spec):
    return (spec["host"], spec["port"])


def fail(exc):
    code = getattr(exc, "errno", None)
    return {"ok": False, "errno": code, "errname": errno.errorcode.get(code, "") if code else "", "error": str(exc)}


def read_all(s):
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return got
        got += chunk


def tcp(spec):
    s = socket.socket(family(spec), socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    payload = spec.get("send", "ping").encode()
    try:
        if spec.get("tfo"):
            # Blocking, so the kernel completes the handshake inside sendto()
            # (a timeout makes the socket non-blocking and gives EINPROGRESS).
            s.settimeout(None)
            s.sendto(payload, socket.MSG_FASTOPEN, addr_of(spec))
            s.settimeout(TIMEOUT)
        else:
            s.connect(addr_of(spec))
            s.sendall(payload)
        peer = s.getpeername()
        local = s.getsockname()
        # Half-close: the upstream may answer only once it sees our FIN.
        s.shutdown(socket.SHUT_WR)
        got = read_all(s)
        return {"ok": True, "peer": [peer[0], peer[1]], "local": [local[0], local[1]], "received": got.decode(errors="replace")}
    except OSError as e:
        return fail(e)
    finally:
        s.close()


def idle(spec):
    """Connect, send nothing, and report how the connection ends."""
    s = socket.socket(family(spec), socket.SOCK_STREAM)
    s.settimeout(spec.get("wait", TIMEOUT))
    try:
        s.connect(addr_of(spec))
        got = s.recv(65536)
        return {"ok": True, "closed": got == b"", "received": got.decode(errors="replace")}
    except OSError as e:
        return fail(e)
    finally:
        s.close()


def hold(spec):
    """Hold a connection open (announcing it on stdout), report how it ended,
    then try a new connection to the same place."""
    s = socket.socket(family(spec), socket.SOCK_STREAM)
    s.settimeout(spec.get("wait", TIMEOUT))
    try:
        s.connect(addr_of(spec))
        print(json.dumps({"held": True}), flush=True)
        got = s.recv(65536)
        first = {"ok": True, "closed": got == b""}
    except OSError as e:
        first = fail(e)
    finally:
        s.close()
    # When the end was seen (CLOCK_MONOTONIC), for the revocation latency bench.
    first["at_ns"] = time.monotonic_ns()
    return {"first": first, "second": tcp(spec)}


def udp(spec):
    s = socket.socket(family(spec), socket.SOCK_DGRAM)
    try:
        if spec.get("connect"):
            s.connect(addr_of(spec))
            s.send(b"x")
        else:
            s.sendto(b"x", addr_of(spec))
        return {"ok": True}
    except OSError as e:
        return fail(e)
    finally:
        s.close()


def icmp_socket(spec):
    # A "ping" socket: unprivileged where net.ipv4.ping_group_range allows.
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    except OSError as e:
        return fail(e)
    try:
        s.sendto(b"\x08\x00\x00\x00\x00\x01\x00\x01", ("127.0.0.1", 0))
        return {"ok": True}
    except OSError as e:
        return fail(e)
    finally:
        s.close()


def in_thread(spec):
    out = {}

    def body():
        out.update(run(spec["inner"]))
        out["tid"] = threading.get_native_id()

    t = threading.Thread(target=body)
    t.start()
    t.join(TIMEOUT * 2)
    return out


def in_child(spec):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        res = run(spec["inner"])
        res["pid"] = os.getpid()
        os.write(w, json.dumps(res).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.waitpid(pid, 0)
    res = json.loads(data)
    res["child_pid"] = pid
    return res


def many(spec):
    """count connections at once, each echoing size random bytes, verified by hash."""
    count, size = spec["count"], spec["size"]
    results = [None] * count

    def one(i):
        data = os.urandom(size)
        try:
            s = socket.create_connection(addr_of(spec), timeout=TIMEOUT * 3)
            sender = threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)))
            sender.start()
            got = read_all(s)
            sender.join()
            s.close()
            results[i] = hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        except OSError as e:
            results[i] = str(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 6)
    bad = [r for r in results if r is not True]
    return {"ok": not bad, "verified": count - len(bad), "failures": [str(b) for b in bad[:5]]}


def httpx_get(spec):
    import httpx

    try:
        r = httpx.get(spec["url"], timeout=TIMEOUT)
        return {"ok": True, "status": r.status_code, "body": r.text}
    except Exception as e:  # noqa: BLE001 - report any client failure
        return {"ok": False, "error": repr(e)}


def hold_many(spec):
    """Open count connections, send one HTTP GET of path on each and read its
    answer (so each is a live keep-alive session), announce them, hold them
    idle for hold seconds, then close them."""
    import resource
    count = spec["count"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 64)), hard))
    request = ("GET %s HTTP/1.1\r\nHost: bench\r\n\r\n" % spec.get("path", "/")).encode()
    socks, answered = [], 0
    try:
        for _ in range(count):
            s = socket.socket(family(spec), socket.SOCK_STREAM)
            s.settimeout(TIMEOUT)
            s.connect(addr_of(spec))
            socks.append(s)
            if spec.get("path"):
                s.sendall(request)
                if s.recv(65536).startswith(b"HTTP/1.1 200"):
                    answered += 1
        print(json.dumps({"held": len(socks), "answered": answered}), flush=True)
        time.sleep(spec.get("hold", 3))
        return {"ok": True, "held": len(socks), "answered": answered}
    except OSError as e:
        print(json.dumps({"held": len(socks), "error": str(e)}), flush=True)
        return fail(e)
    finally:
        for s in socks:
            s.close()


def peer_issuer(tls_sock):
    """The issuer's common name of the certificate the peer showed, read
    without verifying it (the test asks who answered, not whether to trust)."""
    import ssl
    import tempfile
    der = tls_sock.getpeercert(binary_form=True)
    if not der:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:
        f.write(ssl.DER_cert_to_PEM_cert(der))
        f.flush()
        decoded = ssl._ssl._test_decode_cert(f.name)
    for rdn in decoded.get("issuer", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def exchange(spec):
    """Connect, optionally pause before the first byte, optionally speak TLS
    (with the SNI given, not verifying: the report names the issuer of the
    certificate the agent was shown), send `send` (in `pieces` parts,
    `gap` seconds apart), and read the answer until the peer closes or
    the timeout passes."""
    import ssl
    timeout = spec.get("timeout", TIMEOUT)
    out = {"ok": True}
    try:
        s = socket.create_connection(addr_of(spec), timeout=timeout)
    except OSError as e:
        return fail(e)
    try:
        if spec.get("pause"):
            time.sleep(spec["pause"])
        if "tls" in spec:
            t = spec["tls"]
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["http/1.1"])
            s = ctx.wrap_socket(s, server_hostname=t.get("sni"))
            out["issuer"] = peer_issuer(s)
        data = spec.get("send", "").encode()
        pieces = max(1, spec.get("pieces", 1))
        step = max(1, -(-len(data) // pieces))
        for i in range(0, len(data), step):
            if i and spec.get("gap"):
                time.sleep(spec["gap"])
            s.sendall(data[i:i + step])
        got = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except socket.timeout:
            out["timed_out"] = True
        out["received"] = got.decode(errors="replace")
        return out
    except (OSError, ssl.SSLError) as e:
        r = fail(e)
        r.update({k: v for k, v in out.items() if k != "ok"})
        return r
    finally:
        s.close()


class PgReader:
    """Backend messages off a socket, whole."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def until(self, want):
        """The next message whose type is in `want`, or the first
        ErrorResponse: (type, body); (None, b"") if the peer closed."""
        while True:
            while len(self.buf) >= 5:
                kind, length = self.buf[:1], int.from_bytes(self.buf[1:5], "big")
                if len(self.buf) < 1 + length:
                    break
                body, self.buf = self.buf[5:1 + length], self.buf[1 + length:]
                if kind in want or kind == b"E":
                    return kind, body
            chunk = self.sock.recv(65536)
            if not chunk:
                return None, b""
            self.buf += chunk


def pg_error_code(body):
    for field in body.split(b"\0"):
        if field[:1] == b"C":
            return field[1:].decode()
    return None


def pg_login(spec):
    """A PostgreSQL session (plaintext, any password): (socket, reader), or
    the error code of a refused login."""
    s = socket.create_connection(addr_of(spec), timeout=TIMEOUT * 2)
    params = b"user\0agent\0database\0" + spec.get("dbname", "shop").encode() + b"\0\0"
    s.sendall((8 + len(params)).to_bytes(4, "big") + (196608).to_bytes(4, "big") + params)
    reader = PgReader(s)
    while True:
        kind, body = reader.until((b"R", b"Z"))
        if kind == b"R" and int.from_bytes(body[:4], "big") in (3, 5, 10):
            pw = b"not-the-real-one\0"
            s.sendall(b"p" + (4 + len(pw)).to_bytes(4, "big") + pw)
            continue
        if kind == b"R":
            continue
        if kind != b"Z":
            return None, pg_error_code(body)
        return s, reader


def pg_msg(kind, body):
    return kind + (4 + len(body)).to_bytes(4, "big") + body


def pg_run(s, reader, messages):
    """Sends `messages`, reads to ReadyForQuery: the first error's code, or
    "ok" and the first column of the last DataRow."""
    s.sendall(b"".join(messages))
    code, value = "ok", None
    while True:
        kind, body = reader.until((b"D", b"Z"))
        if kind is None:
            return "closed", None
        if kind == b"E" and code == "ok":
            code = pg_error_code(body)
        if kind == b"D" and int.from_bytes(body[2:6], "big", signed=True) >= 0:
            value = body[6:6 + int.from_bytes(body[2:6], "big")].decode()
        if kind == b"Z":
            return code, value


def pg_flood(spec):
    """One session: `simple` Queries, then `extended` executions
    (Parse/Bind/Execute/Sync each), each answered before the next, then
    after `pause` seconds one more Query of `last`: each one's SQLSTATE."""
    try:
        s, reader = pg_login(spec)
        if s is None:
            return {"ok": False, "stage": "login", "code": reader}
        out = []
        for _ in range(spec.get("simple", 0)):
            out.append(["simple", pg_run(s, reader, [pg_msg(b"Q", b"SELECT 1\0")])[0]])
        for i in range(spec.get("extended", 0)):
            value = str(i).encode()
            out.append(["extended", pg_run(s, reader, [
                pg_msg(b"P", b"\0SELECT $1::int\0\0\0"),
                pg_msg(b"B", b"\0\0\0\0\0\1" + len(value).to_bytes(4, "big") + value + b"\0\0"),
                pg_msg(b"E", b"\0\0\0\0\0"),
                pg_msg(b"S", b""),
            ])[0]])
        time.sleep(spec.get("pause", 0))
        last = pg_run(s, reader, [pg_msg(b"Q", spec["last"].encode() + b"\0")])
        s.close()
        return {"ok": True, "codes": out, "last": list(last)}
    except OSError as e:
        return fail(e)


def slow_query(spec):
    """A PostgreSQL session (plaintext, any password) that sends one Query of
    about `size` bytes: its first `first` bytes, then, after `hold` seconds
    (answering at once if the gateway refuses meanwhile), the rest."""
    import select
    size, hold = spec["size"], spec.get("hold", 2)
    try:
        s, reader = pg_login(spec)
        if s is None:
            return {"ok": False, "stage": "login", "code": reader}
        filler = size - 40
        sql = ("SELECT length('" + "x" * filler + "')").encode() + b"\0"
        msg = b"Q" + (4 + len(sql)).to_bytes(4, "big") + sql
        first = spec.get("first", 64 << 10)
        s.sendall(msg[:first])
        ready, _, _ = select.select([s], [], [], hold)
        if not ready:
            s.sendall(msg[first:])
        kind, body = reader.until((b"D",))
        if kind == b"E":
            return {"ok": False, "code": pg_error_code(body), "early": bool(ready)}
        if kind is None:
            return {"ok": False, "closed": True}
        return {"ok": True, "length": int(body[6:].decode() or 0)}
    except OSError as e:
        return fail(e)


def slow_post(spec):
    """An HTTP POST of a JSON body of about `size` bytes, announced with
    Content-Length: its first `first` bytes, then after `hold` seconds (or at
    once if the gateway answers meanwhile) the rest; reports the status."""
    import select
    size, hold = spec["size"], spec.get("hold", 2)
    body = ('{"note": "' + "y" * (size - 14) + '"}').encode()
    head = ("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % (spec.get("path", "/"), spec.get("host_header", "x"), len(body))).encode()
    try:
        s = socket.create_connection(addr_of(spec), timeout=TIMEOUT * 2)
        first = spec.get("first", 64 << 10)
        s.sendall(head + body[:first])
        ready, _, _ = select.select([s], [], [], hold)
        if not ready:
            s.sendall(body[first:])
        got = b""
        while b"\r\n" not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        status = int(got.split(b" ")[1]) if got.startswith(b"HTTP/1.") else 0
        return {"ok": True, "status": status, "early": bool(ready)}
    except OSError as e:
        return fail(e)


def h2_hold(spec):
    """HTTP/2 with prior knowledge: one GET, then hold the connection open
    (announcing it on stdout) and report how it ended: a GOAWAY from the
    server, or the connection just closed or reset."""
    import h2.config
    import h2.connection
    import h2.events

    s = socket.socket(family(spec), socket.SOCK_STREAM)
    s.settimeout(spec.get("wait", TIMEOUT))
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    status, goaway, announced = None, None, False
    try:
        s.connect(addr_of(spec))
        conn.initiate_connection()
        headers = [(":method", "GET"), (":path", spec.get("path", "/")), (":scheme", "http"), (":authority", spec["host"])]
        conn.send_headers(1, headers, end_stream=True)
        s.sendall(conn.data_to_send())
        buf = b""
        while True:
            data = s.recv(65536)
            if not data:
                return {"ok": True, "status": status, "goaway": goaway, "closed": True}
            buf += data
            # Frame by frame (9-byte header, then the payload), so that a
            # GOAWAY is seen even when more frames follow it in one read.
            while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                size = 9 + int.from_bytes(buf[:3], "big")
                frame, buf = buf[:size], buf[size:]
                if goaway is not None:
                    # Past the GOAWAY h2 considers the connection closed;
                    # a PING is still answered, as clients do, so the
                    # server can tell what is in flight and close.
                    if frame[3] == 0x6 and not frame[4] & 0x1:
                        s.sendall(frame[:4] + b"\x01" + frame[5:])
                    continue
                if frame[3] == 0x7:
                    payload = frame[9:]
                    goaway = {
                        "last_stream_id": int.from_bytes(payload[0:4], "big") & 0x7FFFFFFF,
                        "error_code": int.from_bytes(payload[4:8], "big"),
                    }
                    continue
                for event in conn.receive_data(frame):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = int(dict(event.headers)[b":status"])
                    elif isinstance(event, h2.events.StreamEnded) and not announced:
                        announced = True
                        print(json.dumps({"held": True, "status": status}), flush=True)
                pending = conn.data_to_send()
                if pending:
                    s.sendall(pending)
    except OSError as e:
        out = fail(e)
    except Exception as e:  # an h2 protocol error: the report says which
        out = {"ok": False, "error": repr(e)}
    finally:
        s.close()
    out.update({"status": status, "goaway": goaway})
    return out


def parallel(spec):
    """Runs `count` copies of `inner` at once, in threads; their reports in order."""
    results = [None] * spec["count"]

    def one(i):
        results[i] = run(spec["inner"])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(spec["count"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 6)
    return {"ok": True, "results": results}


OPS = {"parallel": parallel, "h2_hold": h2_hold, "pg_flood": pg_flood, "slow_query": slow_query, "slow_post": slow_post, "exchange": exchange, "hold_many": hold_many, "tcp": tcp, "idle": idle, "hold": hold,  "udp": udp, "icmp_socket": icmp_socket, "thread": in_thread, "fork": in_child, "many": many, "httpx": httpx_get}


def run(spec):
    return OPS[spec["op"]](spec)


if __name__ == "__main__":
    result = run(json.loads(sys.argv[1]))
    result.setdefault("pid", os.getpid())
    print(json.dumps(result))
