#!/usr/bin/env python3
"""An OIDC UserInfo stand-in for the schema suite's POST /v1/sessions/migrate cases.

    userinfo_stub.py --email EMAIL --port-file PATH

Listens on 127.0.0.1 on a free port (written to PATH once listening) and answers every GET
that carries `Authorization: Bearer <anything non-empty>` with 200 {"sub": "s", "email": EMAIL},
so that whatever token the fuzzer sends to migrate names one known user; anything else gets
401 {"error": "invalid_token"}. Standard library only.
"""

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--email", required=True)
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Bearer ") and auth[len("Bearer "):].strip():
                self._send(200, {"sub": "schema-suite", "email": args.email})
            else:
                self._send(401, {"error": "invalid_token"})

        def log_message(self, fmt: str, *a) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
