#!/usr/bin/env python3
"""A test HTTPS upstream on loopback with its own CA.

Usage: https_server.py BIND_IP CERT KEY REAL_KEY
Prints the port it listens on, then serves until killed. It answers 401
unless the request carries `Authorization: Bearer REAL_KEY`, and echoes what
it saw as JSON, so a test can tell whether the gateway injected the key and
stripped the agent's placeholder.
"""
import http.server
import json
import ssl
import sys

BIND, CERT, KEY, REAL = sys.argv[1:5]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _reply(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization", "")
        ok = auth == f"Bearer {REAL}"
        out = json.dumps({
            "path": self.path,
            "method": self.command,
            "auth_ok": ok,
            "authorization_headers": len(self.headers.get_all("Authorization") or []),
            "body": body.decode(errors="replace"),
        }).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = _reply
    do_POST = _reply

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer((BIND, 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
ctx.set_alpn_protocols(["http/1.1"])
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
