"""A small HTTP server for the host HTTP client's tests: it misbehaves on request the way real
networks do (drops, truncation, slowness, redirects). Listens on 127.0.0.1 on a free port and
prints that port as its first line; runs until killed.

Routes: /echo (the request as JSON), /status/<code>, /bytes/<n>, /png/<w>x<h>, /truncate/<n> (announces n
bytes, sends half, closes), /drop (closes without answering), /slow/<ms>, /redirect/<n>."""

import json
import struct
import sys
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def png(width, height):
    """A real RGBA PNG with a gradient, made with the standard library."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    rows = b"".join(b"\0" + bytes(c for x in range(width)
                                   for c in (x * 255 // width, y * 255 // height, 90, 255))
                    for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body, headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        parts = self.path.split("?")[0].strip("/").split("/")
        route, arg = parts[0], (parts[1] if len(parts) > 1 else "")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if route == "echo":
            self.reply(200, json.dumps({
                "method": self.command, "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace")}).encode(),
                [("Content-Type", "application/json")])
        elif route == "status":
            self.reply(int(arg), b"status " + arg.encode(),
                       [("X-Test", "first"), ("X-Test", "second")])
        elif route == "bytes":
            self.reply(200, bytes(i % 251 for i in range(int(arg))))
        elif route == "truncate":
            n = int(arg)
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            self.wfile.write(b"x" * (n // 2))
            self.wfile.flush()
            self.close_connection = True
        elif route == "png":
            w, h = (int(v) for v in arg.split("x"))
            self.reply(200, png(w, h), [("Content-Type", "image/png")])
        elif route == "drop":
            self.close_connection = True
            self.connection.close()
        elif route == "slow":
            time.sleep(int(arg) / 1000)
            self.reply(200, b"late")
        elif route == "redirect":
            self.reply(302, b"", [("Location", "/bytes/" + arg)])
        else:
            self.reply(404, b"no route")

    do_GET = do_POST = do_PUT = do_DELETE = handle_any


def main():
    # A real service accepts many connections at once; the standard library's backlog of 5
    # drops the rest of a burst of connects, and the client's TCP resends them a second later.
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
