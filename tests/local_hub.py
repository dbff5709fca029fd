"""A Hugging Face hub on 127.0.0.1 for the download tests: it answers what `huggingface_hub` asks, as the hub does.

* `HEAD /{repo}/resolve/{revision}/{path}`: for a git file 200 with `ETag` (the git blob hash),
  `Content-Length` and `X-Repo-Commit`; for an LFS file (weights, ONNX) a 302 to the CDN, a second
  server on another port (so the client does not follow it, as with the hub's CDN), carrying
  `X-Linked-Etag` (the content's sha256), `X-Linked-Size` and `X-Repo-Commit`.
* `GET` of the same URL: the content (git files) or the same 302; `GET /cdn/{sha256}` on the CDN: the
  content, honouring `Range: bytes=N-` with a 206.
* Errors as the hub sends them: an unknown repository 401 with `X-Error-Code: RepoNotFound`, an
  unknown file 404 `EntryNotFound`, an unknown revision 404 `RevisionNotFound`, a gated repository
  403 `GatedRepo`.

Knobs for faults: `corrupt` (paths served with one byte flipped, under the true hash), `hold`
(a path whose transfer stops after `hold_after` bytes until `release` is set), `gated` (repositories).
Every request is logged in `requests` as (method, path, Range header).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors", ".onnx", ".bin", ".task")


def git_blob_hash(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class LocalHub:
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (repo, path) → content
    corrupt: set[tuple[str, str]] = field(default_factory=set)
    gated: set[str] = field(default_factory=set)
    hold: tuple[str, str] | None = None
    hold_after: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    def add(self, repo: str, path: str, data: bytes) -> None:
        self.files[(repo, path)] = data

    def add_folder(self, repo: str, prefix: str, folder) -> None:
        """Every file under `folder`, at `prefix` + its relative path."""
        from pathlib import Path

        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                self.add(repo, prefix + p.relative_to(folder).as_posix(), p.read_bytes())

    def content_gets(self) -> list[str]:
        """The paths whose content was asked for (GETs, on the hub or the CDN)."""
        return [path for method, path, _ in self.requests if method == "GET"]

    # ------------------------------------------------------------------ serving
    def start(self) -> "LocalHub":
        self._by_sha = {hashlib.sha256(d).hexdigest(): key for key, d in self.files.items()}
        self.cdn = _serve(self, cdn=True)
        self.hub = _serve(self, cdn=False)
        return self

    def refresh(self) -> None:
        self._by_sha = {hashlib.sha256(d).hexdigest(): key for key, d in self.files.items()}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.hub.server_address[1]}"

    def stop(self) -> None:
        self.release.set()
        for server in (self.hub, self.cdn):
            server.shutdown()
            server.server_close()


def _serve(hub: LocalHub, cdn: bool) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            return None

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _error(self, status: int, code: str) -> None:
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _answer(self, body: bool) -> None:
            path = unquote(urlparse(self.path).path)
            hub.requests.append((self.command, path, self.headers.get("Range")))
            if cdn:
                key = hub._by_sha.get(path.removeprefix("/cdn/"))
                return self._error(404, "EntryNotFound") if key is None else self._content(key, body)
            parts = path.lstrip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return self._error(404, "EntryNotFound")
            repo, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            if not any(r == repo for r, _ in hub.files):
                return self._error(401, "RepoNotFound")
            if repo in hub.gated:
                return self._error(403, "GatedRepo")
            if revision not in ("main", COMMIT):
                return self._error(404, "RevisionNotFound")
            data = hub.files.get((repo, filename))
            if data is None:
                return self._error(404, "EntryNotFound")
            if filename.endswith(LFS_SUFFIXES):
                sha = hashlib.sha256(data).hexdigest()
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{hub.cdn.server_address[1]}/cdn/{sha}")
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("X-Linked-Etag", f'"{sha}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("ETag", f'"{git_blob_hash(sha.encode())}"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            return self._content((repo, filename), body, etag=git_blob_hash(data))

        def _content(self, key: tuple[str, str], body: bool, etag: str | None = None) -> None:
            data = hub.files[key]
            # by content: the CDN serves a blob once for every repository that holds it, as the hub's does
            if any(hub.files.get(k) == data for k in hub.corrupt):
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            start = 0
            wanted = self.headers.get("Range")
            if wanted and wanted.startswith("bytes="):
                start = int(wanted[6:].split("-")[0])
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", COMMIT)
            if etag:
                self.send_header("ETag", f'"{etag}"')
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if not body:
                return
            rest = data[start:]
            if hub.hold is not None and hub.files.get(hub.hold) == data and not hub.release.is_set():
                first = max(0, hub.hold_after - start)
                self.wfile.write(rest[:first])
                self.wfile.flush()
                hub.release.wait(600)  # the test kills the client meanwhile, or releases the transfer
                rest = rest[first:]
            try:
                self.wfile.write(rest)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
