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

Knobs for the faults of a real network and a misbehaving hub or mirror (each keyed by (repo, path)):
* `corrupt`: served with one byte flipped, under the true hash;
* `hold`: the transfer stops after `hold_after` bytes until `release` is set (a stall, or a kill midway);
* `lie_size` / `lie_hash`: the size or hash the metadata announces, not the file's;
* `longer`: extra bytes after the file, with a Content-Length that counts them ("length") or with none, the
  body ending when the connection closes ("unannounced");
* `cut`: (byte, times): the connection is closed after that byte of the file, the next `times` transfers;
* `rate`: bytes per second; `trickle`: (after, seconds): one byte every `seconds` after the first `after`;
* `ignore_range`: a ranged request answered 200 with the whole file, as some mirrors and proxies do;
* `revisions`: {name: {(repo, path): bytes}}: another revision whose files differ (the rest as on main);
* `gated` (repositories).
Every request is logged in `requests` as (method, path, Range header); `sent` counts the content bytes written.
"""

from __future__ import annotations

import hashlib
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
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
    lie_size: dict[tuple[str, str], int] = field(default_factory=dict)
    lie_hash: set[tuple[str, str]] = field(default_factory=set)
    longer: dict[tuple[str, str], str] = field(default_factory=dict)
    cut: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (repo, path) → [byte, times left]
    rate: dict[tuple[str, str], float] = field(default_factory=dict)
    trickle: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    ignore_range: set[tuple[str, str]] = field(default_factory=set)
    revisions: dict[str, dict[tuple[str, str], bytes]] = field(default_factory=dict)
    sent: int = 0

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
        self.refresh()
        self.cdn = _serve(self, cdn=True)
        self.hub = _serve(self, cdn=False)
        return self

    def refresh(self) -> None:
        """After files changed: the CDN serves blobs by their sha256."""
        self._blobs = {hashlib.sha256(d).hexdigest(): (key, d) for key, d in self.files.items()}
        for files in self.revisions.values():
            self._blobs |= {hashlib.sha256(d).hexdigest(): (key, d) for key, d in files.items()}

    def commit(self, revision: str) -> str | None:
        if revision in ("main", COMMIT):
            return COMMIT
        if revision in self.revisions:
            return hashlib.sha1(revision.encode()).hexdigest()
        return None

    def knob(self, table, data: bytes):
        """The fault set for this content (by content, as the CDN serves a blob for every repository holding it)."""
        for key in table:
            if self.files.get(key) == data:
                return table[key] if isinstance(table, dict) else True
        return None

    def content(self, key: tuple[str, str], revision: str) -> bytes | None:
        return self.revisions.get(revision, {}).get(key, self.files.get(key))

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
                found = hub._blobs.get(path.removeprefix("/cdn/"))
                return self._error(404, "EntryNotFound") if found is None else self._content(*found, body)
            parts = path.lstrip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return self._error(404, "EntryNotFound")
            repo, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            if not any(r == repo for r, _ in hub.files):
                return self._error(401, "RepoNotFound")
            if repo in hub.gated:
                return self._error(403, "GatedRepo")
            commit = hub.commit(revision)
            if commit is None:
                return self._error(404, "RevisionNotFound")
            key = (repo, filename)
            data = hub.content(key, revision)
            if data is None:
                return self._error(404, "EntryNotFound")
            if filename.endswith(LFS_SUFFIXES):
                sha = hashlib.sha256(data).hexdigest()
                announced = hashlib.sha256(data + b"lie").hexdigest() if key in hub.lie_hash else sha
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{hub.cdn.server_address[1]}/cdn/{sha}")
                self.send_header("X-Repo-Commit", commit)
                self.send_header("X-Linked-Etag", f'"{announced}"')
                self.send_header("X-Linked-Size", str(hub.lie_size.get(key, len(data))))
                self.send_header("ETag", f'"{git_blob_hash(sha.encode())}"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            etag = git_blob_hash(data + b"lie" if key in hub.lie_hash else data)
            return self._content(key, data, body, etag=etag, commit=commit)

        def _content(self, key: tuple[str, str], data: bytes, body: bool, etag: str | None = None,
                     commit: str = COMMIT) -> None:
            # faults go by content: the CDN serves a blob once for every repository that holds it, as the hub's does
            original = data
            if hub.knob(hub.corrupt, data):
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            start = 0
            wanted = self.headers.get("Range")
            if wanted and wanted.startswith("bytes=") and not hub.knob(hub.ignore_range, original):
                start = int(wanted[6:].split("-")[0])
            size = len(data)
            longer = hub.knob(hub.longer, original)
            extra = b"appended junk " * 4096 if longer else b""
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", commit)
            if etag:
                self.send_header("ETag", f'"{etag}"')
            if start:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            if longer == "unannounced":
                self.send_header("Connection", "close")
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(len(data) + len(extra) - start))
            self.end_headers()
            if not body:
                return
            rest = data[start:] + extra
            try:
                self._send(original, start, rest)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _send(self, data: bytes, start: int, rest: bytes) -> None:
            cut = hub.knob(hub.cut, data)
            if cut and cut[1] > 0:  # the connection breaks at that byte of the file (at once, for a resume past it)
                cut[1] -= 1
                rest = rest[: max(0, cut[0] - start)]
                self.close_connection = True
            if hub.hold is not None and hub.files.get(hub.hold) == data and not hub.release.is_set():
                first = max(0, hub.hold_after - start)
                self._write(rest[:first])
                hub.release.wait(600)  # the test kills the client meanwhile, or releases the transfer
                rest = rest[first:]
            trickle = hub.knob(hub.trickle, data)
            if trickle:
                after, seconds = trickle
                first = max(0, after - start)
                self._write(rest[:first])
                for i in range(first, len(rest)):
                    if hub.release.wait(seconds):
                        break
                    self._write(rest[i:i + 1])
                return
            rate = hub.knob(hub.rate, data)
            if rate:
                piece = max(1, int(rate / 10))
                for i in range(0, len(rest), piece):
                    self._write(rest[i:i + piece])
                    if hub.release.wait(0.1):
                        break
                return
            self._write(rest)

        def _write(self, data: bytes) -> None:
            self.wfile.write(data)
            self.wfile.flush()
            hub.sent += len(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@contextmanager
def serving(repositories: dict[str, dict[str, bytes]], monkeypatch) -> Iterator[LocalHub]:
    """A LocalHub serving `repositories` ({repo: {path: bytes}}) with HF_ENDPOINT pointing at it, for one test."""
    server = LocalHub()
    for repo, files in repositories.items():
        for path, data in files.items():
            server.add(repo, path, data)
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    try:
        yield server
    finally:
        server.stop()
