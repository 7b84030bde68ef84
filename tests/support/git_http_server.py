"""Serves git repositories over smart HTTP on 127.0.0.1 for the e2e tests.

`git http-backend` (git's own CGI program) does the protocol; this server adds HTTP basic
auth so credential handling can be tested. Usage:

    python3 git_http_server.py ROOT USER PASSWORD [v0] [tls=CERT,KEY]

With `v0`, the client's `Git-Protocol` header is ignored, so `git http-backend` answers
with protocol v0 (a server that does not speak v2). With `tls=CERT,KEY` it serves HTTPS
with that certificate. Prints `listening PORT` when ready; serves until killed.
A PASSWORD of `@FILE` is read from FILE on every request (a rotated token).
"""

import base64
import http.server
import os
import ssl
import subprocess
import sys

ROOT, USER, PASSWORD = sys.argv[1], sys.argv[2], sys.argv[3]
OPTIONS = sys.argv[4:]
V0_ONLY = "v0" in OPTIONS
TLS = next((o[len("tls="):].split(",") for o in OPTIONS if o.startswith("tls=")), None)
BACKEND = os.path.join(
    subprocess.check_output(["git", "--exec-path"]).decode().strip(), "git-http-backend"
)


def expected():
    password = PASSWORD
    if password.startswith("@"):
        with open(password[1:]) as f:
            password = f.read().strip()
    return "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()


class GitHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: tests read nothing from here
        pass

    def do_GET(self):
        self.serve_git()

    def do_POST(self):
        self.serve_git()

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def serve_git(self):
        body = self.read_body()
        if self.headers.get("Authorization") != expected():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="fleet"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": ROOT,
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": USER,
            "REMOTE_ADDR": "127.0.0.1",
        }
        if self.headers.get("Git-Protocol") and not V0_ONLY:
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        out = subprocess.run([BACKEND], input=body, env=env, capture_output=True).stdout
        sep = out.find(b"\r\n\r\n")
        head, payload = (out[:sep], out[sep + 4:]) if sep >= 0 else out.split(b"\n\n", 1)
        status = 200
        headers = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), GitHandler)
if TLS:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(TLS[0], TLS[1])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
