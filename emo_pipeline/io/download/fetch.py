"""Fetching a download's files from the hub, verifying them and placing them where our loaders read them.

Built on `huggingface_hub` (its metadata request, HTTP transfer, token and endpoint handling), so
HF_ENDPOINT (mirrors), HF_HUB_OFFLINE and the usual tokens (HF_TOKEN, `hf auth login`) apply.

    <model folder>/.emo-download/
        partial/<repo>/<path>       bytes so far, resumed with a ranged request on the next call
        verified/<target>           whole and checked (size, and the hub's sha256 or git hash)
        placed.json                 every file placed: source, commit, hash, size and mtime
        lock                        one download into a folder at a time

A file moves into the model folder only when every file of the request is verified, so an
interrupted or failed download never leaves a half-placed model, and nothing already there is
replaced unless `force`. Files placed before (recorded in placed.json with their size and mtime)
are not asked for again: a second call makes no request at all.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol
from urllib.parse import urlparse

from .catalogue import DOWNLOADS, Download, HubFile, human_size

STATE = ".emo-download"


def disk_margin(needed: int) -> int:
    """Space kept free beyond the files themselves: 1 %, at least 1 MiB."""
    return max(2**20, needed // 100)


class DownloadError(Exception):
    """A download that cannot go on, in one sentence that says what to do."""


class DownloadCancelled(Exception):
    """Stopped on request; what was fetched stays in .emo-download/partial for the next call."""


class Progress(Protocol):
    def start(self, total_bytes: int, files: int) -> None: ...
    def file(self, name: str, size: int, done: int) -> None: ...  # a file begins; `done` bytes are there already
    # (they count towards the whole download; `advance` then reports the bytes that follow)
    def advance(self, n: int) -> None: ...
    def finish(self) -> None: ...


class _Silent:
    def start(self, total_bytes: int, files: int) -> None: ...
    def file(self, name: str, size: int, done: int) -> None: ...
    def advance(self, n: int) -> None: ...
    def finish(self) -> None: ...


@dataclass
class Remote:
    """What the hub says of one file."""
    file: HubFile
    url: str  # where its bytes come from (a CDN for LFS files)
    size: int
    etag: str  # sha256 for LFS files, the git blob hash for others
    commit: str


@dataclass
class Result:
    folder: Path
    placed: list[str]  # targets moved into place by this call
    present: list[str]  # targets that were there already
    fetched_bytes: int
    models: list[Path]  # what to give --model, one per family asked for
    converted: list[Path]


def resolve(names: Iterable[str]) -> list[Download]:
    """The downloads named, each once; an unknown name gets the list of known ones."""
    chosen = []
    for name in names:
        download = DOWNLOADS.get(name.lower())
        if download is None:
            raise DownloadError(f"Unknown download '{name}': choose from {', '.join(DOWNLOADS)}.")
        if download not in chosen:
            chosen.append(download)
    if not chosen:
        raise DownloadError(f"Name what to download: {', '.join(DOWNLOADS)}.")
    return chosen


def files_of(downloads: Iterable[Download]) -> list[HubFile]:
    """Each target once (the VAE and wav2vec2 are shared by the families that read them)."""
    by_target: dict[str, HubFile] = {}
    for download in downloads:
        for f in download.files:
            by_target.setdefault(f.target, f)
    return list(by_target.values())


# ---------------------------------------------------------------------------- the record of placed files
def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # missing or damaged: the files are checked against the hub again


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _stamp(path: Path) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def recorded(folder: Path, target: str, record: dict) -> bool:
    """Placed by us and unchanged since (same size and modification time)."""
    entry = record.get(target)
    path = folder / target
    if not isinstance(entry, dict) or not path.is_file():
        return False
    stamp = _stamp(path)
    return entry.get("size") == stamp["size"] and entry.get("mtime_ns") == stamp["mtime_ns"]


def missing_files(folder: str | Path, downloads: Iterable[Download]) -> list[HubFile]:
    """The files of `downloads` not placed in `folder` (or changed since): what a download would fetch."""
    folder = Path(folder)
    record = _read_json(folder / STATE / "placed.json")
    return [f for f in files_of(downloads) if not recorded(folder, f.target, record)]


# ---------------------------------------------------------------------------- hashes
def file_hash(path: Path, etag: str, on_bytes: Callable[[int], None] | None = None) -> str:
    """The file's hash in the form of the hub's ETag: sha256 for LFS files (64 hex digits), else git's
    blob sha1 (40 hex digits)."""
    if len(etag) == 64:
        digest = hashlib.sha256()
    else:
        digest = hashlib.sha1()
        digest.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        while chunk := f.read(8 * 2**20):
            digest.update(chunk)
            if on_bytes:
                on_bytes(len(chunk))
    return digest.hexdigest()


# ---------------------------------------------------------------------------- the hub
def _hub():
    import huggingface_hub
    from huggingface_hub import constants

    return huggingface_hub, constants


def offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "")
    if value.upper() in ("1", "ON", "YES", "TRUE"):
        return True
    return bool(_hub()[1].HF_HUB_OFFLINE)


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or _hub()[1].ENDPOINT


def _explain(error: Exception, f: HubFile, revision: str) -> DownloadError:
    """One sentence for what the hub or the network said."""
    from huggingface_hub import errors

    page = f"{endpoint().rstrip('/')}/{f.repo}"
    if isinstance(error, errors.GatedRepoError):
        return DownloadError(f"{f.repo} is gated: accept its terms at {page} while logged in, then log in here "
                             "(`hf auth login`, or set HF_TOKEN) and run the command again.")
    if isinstance(error, errors.RevisionNotFoundError):
        return DownloadError(f"{f.repo} has no revision '{revision}': give a branch, tag or commit it has with "
                             "--revision, or leave it out for main.")
    entry_errors = tuple(getattr(errors, n) for n in ("RemoteEntryNotFoundError", "EntryNotFoundError") if hasattr(errors, n))
    if isinstance(error, entry_errors):
        return DownloadError(f"{f.repo} has no file {f.path} at '{revision}': the repository has changed. "
                             "Pass --revision with an earlier commit, or report it to this pack.")
    if isinstance(error, errors.RepositoryNotFoundError):
        return DownloadError(f"The repository {f.repo} was not found at {endpoint()} (renamed, removed or private). "
                             "If it needs a login, log in (`hf auth login` or HF_TOKEN); otherwise report it to this pack.")
    if isinstance(error, errors.OfflineModeIsEnabled):
        return DownloadError("HF_HUB_OFFLINE is set, so nothing can be downloaded: unset it and run the command again.")
    if isinstance(error, errors.HfHubHTTPError):
        status = getattr(getattr(error, "response", None), "status_code", "?")
        return DownloadError(f"The hub answered {status} for {f.repo}/{f.path}; try again later "
                             "(what was fetched so far is kept and resumed).")
    return DownloadError(f"Could not reach {endpoint()} ({type(error).__name__}: {error}). Check the network "
                         "connection, or set HF_ENDPOINT to a mirror; what was fetched so far is kept and resumed "
                         "on the next call.")


def _network_errors() -> tuple[type[Exception], ...]:
    """What the hub's client raises when the network or the hub fails (its HTTP library depends on its version)."""
    import importlib

    from huggingface_hub import errors

    found: list[type[Exception]] = [errors.HfHubHTTPError, errors.OfflineModeIsEnabled, ConnectionError, TimeoutError]
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


def ask_hub(f: HubFile, revision: str) -> Remote:
    """The file's size, hash, commit and download location (one metadata request)."""
    hub, _ = _hub()
    url = hub.hf_hub_url(f.repo, f.path, revision=revision, endpoint=endpoint())
    try:
        meta = hub.get_hf_file_metadata(url, endpoint=endpoint())
    except _network_errors() as error:
        raise _explain(error, f, revision) from None
    if meta.size is None or not meta.etag or not meta.commit_hash:
        raise DownloadError(f"{endpoint()} gave no size, hash or commit for {f.repo}/{f.path}: it does not "
                            "answer as a Hugging Face hub does. Check HF_ENDPOINT.")
    return Remote(f, meta.location, meta.size, meta.etag, meta.commit_hash)


# ---------------------------------------------------------------------------- disk
def _writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / STATE / "probe"
        probe.parent.mkdir(exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = "it is read-only" if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else error.strerror
        raise DownloadError(f"Cannot write in {folder} ({reason}): choose a folder you can write to with --to "
                            "(in ComfyUI: an `emo` path in extra_model_paths.yaml).") from None


def _full_disk(folder: Path, needed: int) -> DownloadError:
    free = shutil.disk_usage(folder).free
    return DownloadError(f"Not enough space in {folder}: {human_size(needed)} more needed, {human_size(free)} free. "
                         "Free some space or choose another disk with --to; what was fetched so far is kept.")


# ---------------------------------------------------------------------------- one file
class _Transfer:
    """A tqdm stand-in for huggingface_hub's transfer: forwards bytes to our progress, and stops on request."""

    progress: Progress = _Silent()
    is_cancelled: Callable[[], bool] = staticmethod(lambda: False)

    def __init__(self, *args, **kwargs):
        self.n = kwargs.get("initial", 0)

    def update(self, n: int = 1) -> None:
        self.n += n
        if n > 0:
            type(self).progress.advance(n)
        if type(self).is_cancelled():
            raise DownloadCancelled()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def close(self) -> None:
        return None

    def set_description(self, *args, **kwargs) -> None:
        return None


def _fetch(remote: Remote, partial: Path, progress: Progress, is_cancelled: Callable[[], bool]) -> None:
    """The file's bytes into `partial`, continuing what is there."""
    hub, _ = _hub()
    from huggingface_hub.file_download import http_get

    partial.parent.mkdir(parents=True, exist_ok=True)
    meta_path = partial.with_name(partial.name + ".json")
    if _read_json(meta_path).get("etag") != remote.etag:
        partial.unlink(missing_ok=True)  # bytes of another version of the file: start again
        _write_json(meta_path, {"etag": remote.etag, "commit": remote.commit})
    done = partial.stat().st_size if partial.is_file() else 0
    if done > remote.size:
        partial.unlink()
        done = 0
    progress.file(remote.file.path, remote.size, done)
    if done == 0 and _copy_from_hub_cache(remote, partial, progress, is_cancelled):
        return
    transfer = type("Transfer", (_Transfer,), {"progress": progress, "is_cancelled": staticmethod(is_cancelled)})
    # The token goes to the hub only, never to the CDN a large file is fetched from (its URL is signed).
    on_hub = urlparse(remote.url).netloc == urlparse(endpoint()).netloc
    try:
        with partial.open("ab") as out:
            http_get(remote.url, out, resume_size=done, headers=hub.utils.build_hf_headers(token=None if on_hub else False),
                     expected_size=remote.size, displayed_filename=remote.file.path, tqdm_class=transfer)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise _full_disk(partial.parent, remote.size - partial.stat().st_size) from None
        if isinstance(error, _network_errors()):
            raise _explain(error, remote.file, remote.commit) from None
        raise DownloadError(f"Download of {remote.file.path} stopped: {error}. Run the command again to resume.") from None
    except _network_errors() as error:
        raise _explain(error, remote.file, remote.commit) from None


def _copy_from_hub_cache(remote: Remote, partial: Path, progress: Progress, is_cancelled: Callable[[], bool]) -> bool:
    """The same file from the user's huggingface_hub cache (e.g. MEMO's own code downloaded it), if it is there."""
    hub, _ = _hub()
    try:
        cached = hub.try_to_load_from_cache(remote.file.repo, remote.file.path, revision=remote.commit)
    except Exception:  # noqa: BLE001  (an unreadable cache is just not used)
        return False
    if not isinstance(cached, str) or os.path.getsize(cached) != remote.size:
        return False
    try:
        os.link(os.path.realpath(cached), partial)  # same disk: no copy at all
        progress.advance(remote.size)
        return True
    except OSError:
        pass
    with open(cached, "rb") as src, partial.open("wb") as out:
        while chunk := src.read(8 * 2**20):
            out.write(chunk)
            progress.advance(len(chunk))
            if is_cancelled():
                raise DownloadCancelled()
    return True


def _verify(remote: Remote, path: Path) -> None:
    size = path.stat().st_size
    if size != remote.size or file_hash(path, remote.etag) != remote.etag:
        path.unlink()
        what = "size" if size != remote.size else ("sha256" if len(remote.etag) == 64 else "git hash")
        raise DownloadError(f"{remote.file.path} from {remote.file.repo} arrived damaged (its {what} is not the "
                            "hub's): it was removed and nothing was placed. Run the command again to fetch it anew.")


# ---------------------------------------------------------------------------- the whole request
def download(names: Iterable[str], to: str | Path, revision: str = "main", *, convert: bool = False,
             force: bool = False, progress: Progress | None = None,
             is_cancelled: Callable[[], bool] = lambda: False, check: bool = True) -> Result:
    """Fetch, verify and place the files of the downloads `names` (families such as "hallo", or "face",
    "separator") in the model folder `to`. `check`: run the strict key check on each family's files
    before reporting success. `convert`: also write each family's network as our single safetensors file."""
    from filelock import FileLock, Timeout

    downloads = resolve(names)
    folder = Path(to).expanduser().absolute()
    progress = progress or _Silent()
    _writable(folder)
    state = folder / STATE
    try:
        lock = FileLock(str(state / "lock"), timeout=0)
        lock.acquire()
    except Timeout:
        raise DownloadError(f"Another download into {folder} is running; wait for it to finish.") from None
    try:
        placed, present, fetched = _download(downloads, folder, revision, force, progress, is_cancelled)
    finally:
        lock.release()
    models = [folder / d.model for d in downloads if d.model]
    if check:
        for d in downloads:
            if d.model:
                check_model(folder / d.model)
    converted = [convert_download(folder, d) for d in downloads if d.model] if convert else []
    return Result(folder, placed, present, fetched, models, converted)


def _download(downloads: list[Download], folder: Path, revision: str, force: bool, progress: Progress,
              is_cancelled: Callable[[], bool]) -> tuple[list[str], list[str], int]:
    state = folder / STATE
    record_path = state / "placed.json"
    record = _read_json(record_path)
    wanted = files_of(downloads)
    todo = [f for f in wanted if not recorded(folder, f.target, record)]
    present = [f.target for f in wanted if f not in todo]
    if not todo:
        return [], present, 0
    if offline():
        names = " ".join(d.name for d in downloads)
        raise DownloadError(f"HF_HUB_OFFLINE is set and {len(todo)} file(s) are missing from {folder} (e.g. "
                            f"{todo[0].target}): run `python -m emo_pipeline download {names}` with the network "
                            "allowed (unset HF_HUB_OFFLINE).")

    remotes = [ask_hub(f, revision) for f in todo]
    fetch: list[Remote] = []
    for remote in remotes:
        target = folder / remote.file.target
        if target.is_file() and target.stat().st_size == remote.size and file_hash(target, remote.etag) == remote.etag:
            record[remote.file.target] = _entry(remote, target)  # the same file, put there by hand
            present.append(remote.file.target)
        elif target.exists() and not force:
            raise DownloadError(f"{target} exists and is not the hub's {remote.file.repo}/{remote.file.path}: it was "
                                "left as it is. Move it away, or run with --force to replace it.")
        else:
            fetch.append(remote)
    _write_json(record_path, record)

    verified = {r.file.target: state / "verified" / r.file.target for r in fetch}
    partials = {r.file.target: state / "partial" / r.file.repo.replace("/", "--") / r.file.path for r in fetch}
    have = sum(partials[r.file.target].stat().st_size if partials[r.file.target].is_file() else 0 for r in fetch
               if not verified[r.file.target].is_file())
    needed = sum(r.size for r in fetch if not verified[r.file.target].is_file()) - have
    if needed + disk_margin(needed) > shutil.disk_usage(folder).free:
        raise _full_disk(folder, needed + disk_margin(needed))

    progress.start(sum(r.size for r in fetch), len(fetch))
    fetched = 0
    try:
        for remote in fetch:
            done = verified[remote.file.target]
            if done.is_file() and _read_json(done.with_name(done.name + ".json")).get("etag") == remote.etag:
                progress.file(remote.file.path, remote.size, remote.size)
                continue
            partial = partials[remote.file.target]
            before = partial.stat().st_size if partial.is_file() else 0
            _fetch(remote, partial, progress, is_cancelled)
            fetched += partial.stat().st_size - before
            _verify(remote, partial)
            done.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, done)
            _write_json(done.with_name(done.name + ".json"), {"etag": remote.etag, "commit": remote.commit})
            partial.with_name(partial.name + ".json").unlink(missing_ok=True)
    finally:
        progress.finish()

    placed = []
    for remote in fetch:  # every file is whole and checked: now they go into place
        target = folder / remote.file.target
        target.parent.mkdir(parents=True, exist_ok=True)
        done = verified[remote.file.target]
        os.replace(done, target)
        done.with_name(done.name + ".json").unlink(missing_ok=True)
        record[remote.file.target] = _entry(remote, target)
        placed.append(remote.file.target)
    _write_json(record_path, record)
    shutil.rmtree(state / "partial", ignore_errors=True)
    shutil.rmtree(state / "verified", ignore_errors=True)
    return placed, present, fetched


def _entry(remote: Remote, path: Path) -> dict:
    return {"repo": remote.file.repo, "path": remote.file.path, "commit": remote.commit, "etag": remote.etag,
            **_stamp(path)}


# ---------------------------------------------------------------------------- after the download
def check_model(model: Path) -> None:
    """Our loaders' strict check on a placed family: the network's keys and shapes, and its VAE and audio
    encoder found where the loader looks."""
    from ..loading import network_config
    from ..model_files import audio_encoder_path, find_net, vae_path

    net = find_net(model)
    config = network_config(net)
    vae_path(net)
    audio_encoder_path(net, config)


def convert_download(folder: Path, download: Download) -> Path:
    """The family's network as our single safetensors file, <folder>/<name>.safetensors, in its GPU precision."""
    from ..loading import PRECISIONS, convert_checkpoint, network_config
    from ..model_files import find_net

    source = find_net(folder / download.model)
    config = network_config(source)
    return convert_checkpoint(source, folder / f"{download.name}.safetensors", PRECISIONS[config.spec.gpu_precision],
                              config)
