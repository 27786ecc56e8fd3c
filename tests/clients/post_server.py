"""A plain HTTP server for tests: answers every POST with the body it got
and, when given a log file, appends each body there as one line (a webhook
receiver). Usage: post_server.py IP [LOG]. Prints its port, then serves."""
import http.server
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if len(sys.argv) > 2:
            with open(sys.argv[2], "ab") as f:
                f.write(body.replace(b"\n", b" ") + b"\n")
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer((sys.argv[1], 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
