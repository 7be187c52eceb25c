#!/usr/bin/env python3
"""A tiny HTTP/1.1 backend for trying vantage-se: answers every request with its own name.

    python3 examples/backend.py 9001 &
    python3 examples/backend.py 9002 &
"""
import http.server
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = f"hello from backend {self.server.server_port}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9001
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
