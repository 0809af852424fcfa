"""``podisco serve``: the report of a run, rebuilt on each request, refreshing while the run goes on.

Bound to 127.0.0.1 by default; any other address must be asked for (``--allow-remote``). A random access token
is printed at start and required on every request (``?token=...`` or ``Authorization: Bearer ...``); the
token is compared in constant time. Peers' web views have been left open on the network; this one is not.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import urllib.parse
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from podisco.discovery.archive import Archive
from podisco.errors import PodiscoError
from podisco.reporting.report import build_report

REFRESH_S = 10


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ReportServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, run_id: str, host: str, port: int, token: str, sweeps: Sequence[str]) -> None:
        self.root, self.run_id, self.token, self.sweeps = root, run_id, token, list(sweeps)
        self.lock = threading.Lock()
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/?token={self.token}"

    def page(self) -> str:
        with self.lock:  # one SQLite connection per build; builds are short
            archive = Archive(self.root / "archive.sqlite")
            try:
                run = archive.run(self.run_id)
                refresh = 0 if run and run["finished"] else REFRESH_S
                return build_report(archive, self.run_id, self.sweeps, refresh_s=refresh)
            finally:
                archive.close()


class _Handler(BaseHTTPRequestHandler):
    server: ReportServer

    def log_message(self, format: str, *args) -> None:
        pass  # quiet: the token is in the URL and must not end up in logs

    def _authorised(self) -> bool:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        offered = (query.get("token") or [""])[0]
        header = self.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            offered = header.removeprefix("Bearer ")
        return hmac.compare_digest(offered.encode(), self.server.token.encode())

    def do_GET(self) -> None:
        if not self._authorised():
            self._send(403, "text/plain; charset=utf-8", b"forbidden: this view needs the token printed at start\n")
            return
        if urllib.parse.urlsplit(self.path).path not in ("/", "/index.html"):
            self._send(404, "text/plain; charset=utf-8", b"not found\n")
            return
        try:
            body = self.server.page().encode("utf-8")
        except Exception as error:  # an archive being written, a missing run: say so, keep serving
            self._send(500, "text/plain; charset=utf-8", f"could not build the report: {error}\n".encode())
            return
        self._send(200, "text/html; charset=utf-8", body)

    def _send(self, code: int, kind: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


def make_server(
    root: str | Path,
    run_id: str,
    host: str = "127.0.0.1",
    port: int = 0,
    allow_remote: bool = False,
    token: str | None = None,
    sweeps: Sequence[str] = (),
) -> ReportServer:
    if not _is_loopback(host) and not allow_remote:
        raise PodiscoError(f"refusing to serve on {host}: only loopback addresses unless --allow-remote is given")
    root = Path(root)
    if not (root / "archive.sqlite").exists():
        raise PodiscoError(f"no archive at {root / 'archive.sqlite'}")
    return ReportServer(root, run_id, host, port, token or secrets.token_urlsafe(24), sweeps)
