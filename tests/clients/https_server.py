#!/usr/bin/env python3
"""A test HTTPS upstream on loopback with its own CA.

Usage: https_server.py BIND_IP CERT KEY REAL_KEY
Prints the port it listens on, then serves until killed. It answers 401
unless the request carries `Authorization: Bearer REAL_KEY`, and echoes what
it saw as JSON, so a test can tell whether the gateway injected the key and
stripped the agent's placeholder.
"""
import base64
import hashlib
import http.server
import json
import ssl
import sys
import time

BIND, CERT, KEY, REAL = sys.argv[1:5]


CONNECTIONS = 0
TOKEN_REQUESTS = 0
CLIENT = ("interlock-test", "client-secret-xyz")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        global CONNECTIONS
        CONNECTIONS += 1
        super().setup()

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
            "connections": CONNECTIONS,
            "token_requests": TOKEN_REQUESTS,
            # A careless upstream that echoes the caller's credential.
            "echoed_authorization": auth if self.path.startswith("/v1/echo-auth") else None,
        }).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self._websocket()
        return self._reply()

    def _websocket(self):
        """A minimal WebSocket echo (RFC 6455): text frames come back as they went."""
        if self.headers.get("Authorization", "") != f"Bearer {REAL}":
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        sock = self.connection
        while True:
            head = self._read(sock, 2)
            if not head:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = int.from_bytes(self._read(sock, 2), "big")
            mask = self._read(sock, 4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self._read(sock, length)))
            if opcode == 8:
                sock.sendall(b"\x88\x00")
                return
            reply = b"echo: " + data
            sock.sendall(bytes([0x81, len(reply)]) + reply)

    @staticmethod
    def _read(sock, n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                return b""
            buf += chunk
        return buf

    def do_POST(self):
        if self.path == "/oauth/token":
            return self._token()
        if self.path != "/v1/chat/completions":
            return self._reply()
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        if self.headers.get("Authorization", "") != f"Bearer {REAL}":
            out = json.dumps({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        model = request.get("model", "test-model")
        if request.get("tools") and not request.get("stream"):
            return self._tool_turn(request, model)
        if not request.get("stream"):
            out = json.dumps({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "hello from the test upstream"}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6},
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        # Server-sent events, one chunk at a time, with pauses between them.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        prompt = json.dumps(request.get("messages", []))
        parts = ["Your card is 4111 1111", " 1111 1111, keep it safe."] if "card" in prompt else ["hel", "lo ", "stream"]
        for i, part in enumerate(parts):
            delta = {"content": part} if i else {"role": "assistant", "content": part}
            chunk = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
            time.sleep(0.05)
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _token(self):
        """OAuth2 client-credentials endpoint: hands out REAL as the access token."""
        global TOKEN_REQUESTS
        length = int(self.headers.get("Content-Length") or 0)
        form = self.rfile.read(length).decode()
        expected = "Basic " + base64.b64encode(f"{CLIENT[0]}:{CLIENT[1]}".encode()).decode()
        if "grant_type=client_credentials" not in form or self.headers.get("Authorization") != expected:
            out, status = json.dumps({"error": "invalid_client"}).encode(), 401
        else:
            TOKEN_REQUESTS += 1
            out, status = json.dumps({"access_token": REAL, "token_type": "bearer", "expires_in": 3600}).encode(), 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def _tool_turn(self, request, model):
        """First turn: ask for the first tool; once its result is in, answer with it."""
        results = [m.get("content") for m in request.get("messages", []) if m.get("role") == "tool"]
        if results:
            message = {"role": "assistant", "content": f"Final answer: {results[-1]}"}
            finish = "stop"
        else:
            tool = request["tools"][0]["function"]["name"]
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": tool, "arguments": json.dumps({"order_id": "42"})}}]}
            finish = "tool_calls"
        out = json.dumps({"id": "chatcmpl-3", "object": "chat.completion", "created": 0, "model": model,
                          "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def _chunk(self, data):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer((BIND, 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
ctx.set_alpn_protocols(["http/1.1"])
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
