#!/usr/bin/env python3
"""A WebSocket client over TLS, written out by hand (no library), that sends
one text frame and reports the echo. Usage: ws_client.py IP HOST CAFILE"""
import base64
import json
import os
import socket
import ssl
import sys

ip, host, cafile = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=cafile)
ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection((ip, 443), timeout=10), server_hostname=host)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer placeholder\r\n\r\n").encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(1)
    if not chunk:
        break
    head += chunk
status = head.split(b"\r\n")[0].decode()
result = {"status": status}
if " 101 " in status:
    payload = b"hello ws"
    mask = os.urandom(4)
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    frame = s.recv(2)
    result["echo"] = s.recv(frame[1] & 0x7F).decode()
    s.sendall(bytes([0x88, 0x80]) + os.urandom(4))
print(json.dumps(result))
