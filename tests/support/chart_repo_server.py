"""Serves a directory as a classic helm chart repository on 127.0.0.1 for the e2e tests,
optionally over HTTPS and behind HTTP basic auth. Usage:

    CHART_REPO_USER=u CHART_REPO_PASSWORD_FILE=password \
    CHART_REPO_CERT=server.crt CHART_REPO_KEY=server.key \
    CHART_REPO_LOG=requests.log python3 chart_repo_server.py ROOT

Every variable is optional: without USER no auth is asked, without CERT/KEY it serves plain
HTTP. The password is read from its file at every request (a test rotates it by rewriting
the file); no secret is on the command line (argv shows in `ps`).
Each request is appended to CHART_REPO_LOG as `STATUS PATH AUTH` (AUTH: `none`, `ok` or
`bad`). Prints `listening PORT` when ready; serves until killed.
"""

import base64
import http.server
import os
import ssl
import sys

ROOT = os.path.abspath(sys.argv[1])
USER = os.environ.get("CHART_REPO_USER")
PASSWORD_FILE = os.environ.get("CHART_REPO_PASSWORD_FILE")
CERT = os.environ.get("CHART_REPO_CERT")
KEY = os.environ.get("CHART_REPO_KEY")
LOG = os.environ.get("CHART_REPO_LOG")


def expected():
    if not USER:
        return None
    with open(PASSWORD_FILE) as f:
        password = f.read()
    return "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: requests go to LOG
        pass

    def record(self, status, auth):
        if LOG:
            with open(LOG, "a") as f:
                f.write(f"{status} {self.path} {auth}\n")

    def reply(self, status, body=b"", content_type="text/plain"):
        self.send_response(status)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="charts"')
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        given = self.headers.get("Authorization")
        want = expected()
        auth = "none" if given is None else ("ok" if given == want else "bad")
        if want is not None and auth != "ok":
            self.record(401, auth)
            self.reply(401)
            return
        path = os.path.normpath(os.path.join(ROOT, self.path.split("?")[0].lstrip("/")))
        if not path.startswith(os.path.abspath(ROOT)) or not os.path.isfile(path):
            self.record(404, auth)
            self.reply(404, b"not found\n")
            return
        with open(path, "rb") as f:
            body = f.read()
        self.record(200, auth)
        kind = "application/x-yaml" if path.endswith(".yaml") else "application/gzip"
        self.reply(200, body, kind)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if CERT:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERT, KEY)
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
