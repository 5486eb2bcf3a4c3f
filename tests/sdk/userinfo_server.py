#!/usr/bin/env python3
"""A tiny OIDC UserInfo stand-in for the SDK suites' sessions.migrate checks.

    userinfo_server.py --email EMAIL --port-file PATH [--unknown-email EMAIL]

Listens on 127.0.0.1 on a free port (written to PATH once listening) and answers
any GET:
  Authorization: Bearer good-token     -> 200 {"sub": "x", "email": EMAIL}
  Authorization: Bearer unknown-email  -> 200 {"sub": "y", "email": <an email no user has>}
  anything else                        -> 401 {"error": "invalid_token"}
Standard library only, so it runs with any python3.
"""

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--email", required=True)
    parser.add_argument("--unknown-email", default="nobody-has-this-address@example.invalid")
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args()

    answers = {
        "Bearer good-token": {"sub": "x", "email": args.email},
        "Bearer unknown-email": {"sub": "y", "email": args.unknown_email},
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Bearer error="invalid_token"')
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            answer = answers.get(self.headers.get("Authorization", ""))
            if answer is None:
                self._send(401, {"error": "invalid_token"})
            else:
                self._send(200, answer)

        def log_message(self, fmt: str, *a) -> None:
            sys.stderr.write("userinfo: " + (fmt % a) + "\n")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
