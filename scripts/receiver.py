#!/usr/bin/env python3
"""A webhook receiver for trying hookstream locally: prints every request it gets and
answers 200. Usage: python3 scripts/receiver.py PORT"""
import http.server
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def _handle(self):
        length = int(self.headers.get("content-length", 0))
        body = self.rfile.read(length).decode(errors="replace")
        hookstream = {k: v for k, v in self.headers.items() if k.lower().startswith("x-hookstream")}
        print(f"{self.command} {self.path} {hookstream} {body}", flush=True)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET = _handle

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
