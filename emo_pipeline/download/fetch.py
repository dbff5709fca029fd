"""Fetching a download's files from the hub, checking each part and placing them where our loaders read them.

    <model folder>/.emo-download/
        partial/<repo>/<path>     bytes so far (and .json: the hub hash they belong to), resumed by a ranged request
        verified/<target>         whole and hash-checked, waiting for the content check
        check/<target>            the model as it would be once placed (links to verified/ and to what is in
                                  place), where each part's content check runs
        placed.json               each file placed or found good: hub hash, commit, revision, size, time, check
        lock                      one download into a folder at a time

The folder our loaders read changes only when every part of the request passed its content check (checks.py):
then the new files are moved into place and recorded. A part that fails is removed from staging and named, and
nothing is placed or recorded, so the next call fetches it again. Files recorded, unchanged since and of the
revision asked make no request at all; anything else present is checked (by the hub's hash and by content)
before it is trusted, so a file placed by hand, by an older version or damaged on disk is found out.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..io.safe_files import open_new, remove_file, remove_folder
from . import record as rec
from .catalogue import DOWNLOADS, Download, HubFile, human_size
from .checks import PartDamaged, Unit, check, units_of
from .errors import DownloadCancelled, DownloadError
from .hub import Remote, ask_hub, endpoint, offline
from .transfer import Limits, Progress, fetch_into

STATE = ".emo-download"
log = logging.getLogger(__name__)

__all__ = ["Conversion", "DownloadCancelled", "DownloadError", "Progress", "Result", "STATE", "download",
           "missing_files"]


def disk_margin(needed: int) -> int:
    """Space kept free beyond the files themselves: 1 %, at least 1 MiB."""
    return max(2**20, needed // 100)


class _Silent:
    def notice(self, text: str) -> None:
        log.warning("%s", text)  # a licence is said even when no progress is shown

    def start(self, total_bytes: int, files: int) -> None: ...
    def file(self, name: str, size: int, done: int) -> None: ...
    def advance(self, n: int) -> None: ...
    def finish(self) -> None: ...


@dataclass(frozen=True)
class Conversion:
    """A family's network as our single safetensors file after the download."""
    path: Path
    precision: str  # fp16, bf16
    size: int  # bytes of the file
    values: int  # the network's values, so size ≈ values × 2 in fp16
    written: bool  # False: the file of an earlier call, made from these same files, was kept
    kept_foreign: bool = False  # a file there that we did not write: left as it is, nothing converted

    @property
    def said(self) -> str:
        """The one line that says what was written."""
        if self.kept_foreign:
            return (f"Not converted: {self.path} exists and does not record the files it was made from (not a file "
                    "this download wrote); it was left as it is: move it away to have the network converted there.")
        what = f"{self.path} ({self.precision}, {human_size(self.size)} for {self.values / 1e6:,.1f} M values)"
        if self.written:
            return f"Converted the network to our single safetensors file: {what}."
        return f"Converted network up to date with the downloaded files, kept: {what}."


@dataclass
class Result:
    folder: Path
    placed: list[str]  # targets moved into place by this call
    present: list[str]  # targets that were there already (and passed their checks)
    fetched_bytes: int  # bytes that came over the network in this call
    models: list[Path]  # what to give --model, one per family asked for (its converted file when there is one)
    converted: list[Path]  # the converted files, written or kept
    conversions: list[Conversion] = field(default_factory=list)


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


def _units(downloads: Iterable[Download]) -> list[Unit]:
    return list(dict.fromkeys(u for d in downloads for u in units_of(d)))


def missing_files(folder: str | Path, downloads: Iterable[Download]) -> list[HubFile]:
    """The files of `downloads` not placed and checked in `folder` (or changed since): what a download would
    fetch or check. Reads only the record and the files' sizes and times."""
    folder = Path(folder)
    record = rec.read(folder / STATE / "placed.json")
    return [f for f in files_of(downloads) if not rec.unchanged(folder, f.target, record)]


# ---------------------------------------------------------------------------- disk
def _writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / STATE / "probe"
        probe.parent.mkdir(exist_ok=True)
        remove_file(probe)
        open_new(probe).close()
        remove_file(probe)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _full_disk(folder, 2**20) from None
        reason = "it is read-only" if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else error.strerror
        raise DownloadError(f"Cannot write in {folder} ({reason}): choose a folder you can write to with --to "
                            "(in ComfyUI: an `emo` path in extra_model_paths.yaml).") from None


def _full_disk(folder: Path, needed: int) -> DownloadError:
    free = shutil.disk_usage(folder).free
    return DownloadError(f"Not enough space in {folder}: {human_size(needed)} needed, {human_size(free)} free. "
                         "Free some space or choose another disk with --to; what was fetched so far is kept.")


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() and not path.is_symlink() else 0


# ---------------------------------------------------------------------------- the whole request
def download(names: Iterable[str], to: str | Path, revision: str | None = None, *, convert: bool = False,
             force: bool = False, replace_damaged: bool = False, progress: Progress | None = None,
             is_cancelled: Callable[[], bool] = lambda: False, limits: Limits | None = None) -> Result:
    """Fetch, check and place the files of the downloads `names` (families such as "hallo", or "face",
    "separator") in the model folder `to`. `revision`: a branch, tag or commit (None: main, and files recorded
    from any revision are kept). `force`: replace files in the way that differ from the hub's;
    `replace_damaged`: replace only those that fail their content check. `convert`: also write each family's
    network as our single safetensors file (the downloads marked `convert` in the catalogue always are: EchoMimic
    v2's); it is not written again while the files it was made from are unchanged."""
    from filelock import FileLock, Timeout

    downloads = resolve(names)
    folder = Path(to).expanduser().absolute()
    progress = progress or _Silent()
    limits = limits or Limits.from_environment()
    _writable(folder)
    try:
        lock = FileLock(str(folder / STATE / "lock"), timeout=0)
        lock.acquire()
    except Timeout:
        raise DownloadError(f"Another download into {folder} is running; wait for it to finish.") from None
    except OSError as error:
        raise DownloadError(f"Cannot lock {folder / STATE / 'lock'} ({error.strerror}): free some space or check "
                            "the folder's permissions.") from None
    try:
        job = _Job(downloads, folder, revision, force or replace_damaged, force, progress, is_cancelled, limits)
        placed, present, fetched = job.run()
    finally:
        lock.release()
    conversions = {d.name: convert_download(folder, d, is_cancelled) for d in downloads
                   if d.model and (convert or d.convert)}
    models = [conversions[d.name].path if d.name in conversions and not conversions[d.name].kept_foreign
              else folder / d.model for d in downloads if d.model]
    converted = [c.path for c in conversions.values() if not c.kept_foreign]
    return Result(folder, placed, present, fetched, models, converted, list(conversions.values()))


class _Job:
    def __init__(self, downloads: list[Download], folder: Path, revision: str | None, replace_damaged: bool,
                 force: bool, progress: Progress, is_cancelled: Callable[[], bool], limits: Limits) -> None:
        self.downloads, self.folder, self.revision = downloads, folder, revision
        self.replace_damaged, self.force = replace_damaged, force
        self.progress, self.is_cancelled, self.limits = progress, is_cancelled, limits
        self.state = folder / STATE
        self.record_path = self.state / "placed.json"
        self.record = rec.read(self.record_path)
        self.names = " ".join(d.name for d in downloads)

    # ------------------------------------------------------------------ which files need what
    def _settled(self, f: HubFile) -> bool:
        """Recorded, unchanged since and of the revision asked: nothing to ask the hub."""
        return rec.unchanged(self.folder, f.target, self.record) and self._of_revision(self.record[f.target])

    def run(self) -> tuple[list[str], list[str], int]:
        wanted = files_of(self.downloads)
        todo = [f for f in wanted if not self._settled(f)]
        present = [f.target for f in wanted if f not in todo]
        if not todo:
            return [], present, 0
        if offline():
            return [], present + self._offline(todo), 0
        self._say_licences(todo)
        self.fetch: list[Remote] = []
        try:
            return self._online(todo, present)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                needed = sum(r.size - self._staged_bytes(r) for r in self.fetch)
                raise _full_disk(self.folder, needed + disk_margin(needed)) from None
            raise DownloadError(f"Cannot write in {self.folder} ({error.strerror}: {error.filename}); what was "
                                "fetched so far is kept.") from None

    def _say_licences(self, todo: list[HubFile]) -> None:
        """Before the hub is asked anything: the licence of each download with files to fetch whose use is restricted
        (non-commercial), said once, here, for the command line and ComfyUI alike."""
        targets = {f.target for f in todo}
        # a Progress written before notice() existed: the log says it
        notice = getattr(self.progress, "notice", None) or (lambda text: log.warning("%s", text))
        for d in self.downloads:
            if d.licence_notice and targets & {f.target for f in d.files}:
                notice(d.licence_notice)

    def _offline(self, todo: list[HubFile]) -> list[str]:
        """No network: files present are checked by the hub hash recorded earlier, else by content alone."""
        missing = [f.target for f in todo if not (self.folder / f.target).is_file()]
        if missing:
            shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
            raise DownloadError(f"HF_HUB_OFFLINE is set and {len(missing)} file(s) are missing from {self.folder} "
                                f"({shown}): run `python -m emo_pipeline download {self.names}` with the network "
                                "allowed (unset HF_HUB_OFFLINE).")
        problems, hashes = [], {}
        for f in todo:
            entry = self.record.get(f.target)
            if entry is not None and not self._of_revision(entry):
                problems.append(f"{f.target} is of revision '{entry.get('revision')}', not '{self.revision}'")
            elif entry is not None and entry.get("etag"):
                if rec.same_as(self.folder / f.target, entry["size"], entry["etag"]):
                    hashes[f.target] = (entry["etag"], entry.get("commit"))
                else:
                    problems.append(f"{f.target} changed since it was placed (its size or hash is no longer the hub's)")
        units = self._touched(todo)
        for unit, reason in self._check(units, self.folder).items():
            problems.append(f"{self._what(unit)} is damaged: {reason}")
        if problems:
            raise DownloadError(f"HF_HUB_OFFLINE is set and {'; '.join(problems)}. Run `python -m emo_pipeline "
                                f"download {self.names} --force` with the network allowed to replace "
                                f"{'it' if len(problems) == 1 else 'them'}.")
        for f in todo:
            etag, commit = hashes.get(f.target, (None, None))
            entry = self.record.get(f.target) or {}
            self.record[f.target] = rec.entry(self.folder / f.target, etag, commit, entry.get("revision", "main"))
        rec.write(self.record_path, self.record)
        return [f.target for f in todo]

    def _of_revision(self, entry: dict) -> bool:
        """Whether a record entry is of the revision asked (any, when none was): by its name, or by its commit."""
        if self.revision is None or entry.get("revision") == self.revision:
            return True
        return len(self.revision) >= 7 and (entry.get("commit") or "").startswith(self.revision.lower())

    def _touched(self, files: list[HubFile]) -> list[Unit]:
        targets = {f.target for f in files}
        return [u for u in _units(self.downloads) if targets & set(u.targets)]

    def _what(self, unit: Unit) -> str:
        files = ", ".join(unit.targets[:4]) + (", ..." if len(unit.targets) > 4 else "")
        return f"{unit.path} ({unit.part}: {files})" if unit.part == "network" else f"{unit.path} ({unit.part})"

    def _check(self, units: list[Unit], root: Path) -> dict[Unit, str]:
        """Each unit's content check, on `root` laid out as the model folder; {unit: what is wrong} for failures."""
        failures = {}
        for unit in units:
            if self.is_cancelled():
                raise DownloadCancelled()
            try:
                check(unit, root)
            except PartDamaged as damage:
                failures[unit] = str(damage)
        return failures

    # ------------------------------------------------------------------ with the network
    def _online(self, todo: list[HubFile], present: list[str]) -> tuple[list[str], list[str], int]:
        asked = self.revision or "main"
        remotes = {f.target: ask_hub(f, asked) for f in todo}
        fetch: list[Remote] = []
        same: list[Remote] = []
        foreign: list[Remote] = []
        for f in todo:
            remote, target = remotes[f.target], self.folder / f.target
            entry = self.record.get(f.target)
            ours = rec.unchanged(self.folder, f.target, self.record)
            if ours and entry.get("etag") == remote.etag:
                same.append(remote)  # another revision, the same file
            elif rec.same_as(target, remote.size, remote.etag):
                same.append(remote)  # the hub's file, put there by hand or by an older version
            elif target.exists() or target.is_symlink():
                (fetch if ours else foreign).append(remote)  # ours, of another revision: replaced freely
            else:
                fetch.append(remote)
        fetch += self._decide_foreign(foreign)
        self.fetch = fetch

        needed = sum(r.size - self._staged_bytes(r) for r in fetch)
        if needed and needed + disk_margin(needed) > shutil.disk_usage(self.folder).free:
            raise _full_disk(self.folder, needed + disk_margin(needed))

        fetched = self._fetch_all(fetch)
        view = self._lay_out_view([r.file.target for r in fetch])
        try:
            failures = self._check(self._touched([r.file for r in fetch + same]), view)
        finally:
            remove_folder(view)
        if failures:
            self._refuse(failures, fetch)

        placed = []
        for remote in fetch:  # every part passed: now the new files go into place
            target = self.folder / remote.file.target
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._verified(remote), target)
            self._verified(remote).with_name(self._verified(remote).name + ".json").unlink(missing_ok=True)
            placed.append(remote.file.target)
        for remote in fetch + same:
            self.record[remote.file.target] = rec.entry(self.folder / remote.file.target, remote.etag, remote.commit,
                                                         asked)
        rec.write(self.record_path, self.record)
        for sub in ("partial", "verified"):
            remove_folder(self.state / sub)
        return placed, present + [r.file.target for r in same], fetched

    def _decide_foreign(self, foreign: list[Remote]) -> list[Remote]:
        """Files present that are not the hub's: replaced with --force; a damaged one (its part fails the content
        check) also when `replace_damaged`; otherwise left as they are, and the call ends saying so."""
        if not foreign:
            return []
        if self.force:
            return foreign
        units = self._touched([r.file for r in foreign])
        complete = [u for u in units if all((self.folder / t).is_file() for t in u.targets)]
        failures = self._check(complete, self.folder)
        damaged = {t: reason for u, reason in failures.items() for t in u.targets}
        if self.replace_damaged and all(r.file.target in damaged for r in foreign):
            return foreign
        lines = []
        for remote in foreign:
            target = self.folder / remote.file.target
            if remote.file.target in damaged:
                lines.append(f"{target} is damaged ({damaged[remote.file.target]})")
            else:
                lines.append(f"{target} exists and is not the hub's {remote.file.repo}/{remote.file.path}")
        raise DownloadError(f"{'; '.join(lines)}: left as {'it is' if len(lines) == 1 else 'they are'}. Run "
                            f"`python -m emo_pipeline download {self.names} --force` to replace "
                            f"{'it' if len(lines) == 1 else 'them'} with the hub's, or move "
                            f"{'it' if len(lines) == 1 else 'them'} away if {'it is' if len(lines) == 1 else 'they are'}"
                            " your own.")

    # ------------------------------------------------------------------ staging
    def _partial(self, remote: Remote) -> Path:
        return self.state / "partial" / remote.file.repo.replace("/", "--") / remote.file.path

    def _verified(self, remote: Remote) -> Path:
        return self.state / "verified" / remote.file.target

    def _staged_bytes(self, remote: Remote) -> int:
        if _size(self._verified(remote)) == remote.size:
            return remote.size
        return min(_size(self._partial(remote)), remote.size)

    def _fetch_all(self, fetch: list[Remote]) -> int:
        self.progress.start(sum(r.size for r in fetch), len(fetch))
        fetched = 0
        try:
            for remote in fetch:
                done = self._verified(remote)
                if rec.same_as(done, remote.size, remote.etag):  # whole from an earlier call: hashed again, trusted not
                    self.progress.file(remote.file.path, remote.size, remote.size)
                    continue
                done.unlink(missing_ok=True)
                partial = self._partial(remote)
                partial.parent.mkdir(parents=True, exist_ok=True)
                meta = partial.with_name(partial.name + ".json")
                if rec.read_json(meta).get("etag") != remote.etag:  # bytes of another version, or of nothing known
                    partial.unlink(missing_ok=True)
                    rec.write(meta, {"etag": remote.etag})
                if partial.is_symlink():
                    partial.unlink()
                self.progress.file(remote.file.path, remote.size, _size(partial))
                if _size(partial) == 0 and _copy_from_hub_cache(remote, partial, self.progress, self.is_cancelled):
                    pass
                else:
                    fetched += fetch_into(remote, partial, self.progress, self.is_cancelled, self.limits)
                if rec.file_hash(partial, remote.etag) != remote.etag:
                    partial.unlink()
                    what = "sha256" if len(remote.etag) == 64 else "git hash"
                    raise DownloadError(f"{remote.file.path} from {remote.file.repo} arrived damaged (its {what} is not "
                                        "the hub's): it was removed and nothing was placed. Run the command again to "
                                        "fetch it anew.")
                done.parent.mkdir(parents=True, exist_ok=True)
                os.replace(partial, done)
                meta.unlink(missing_ok=True)
        finally:
            self.progress.finish()
        return fetched

    def _lay_out_view(self, fetched: list[str]) -> Path:
        """check/: the model folder as it would be after placing, as links (no copy of any weights)."""
        view = self.state / "check"
        remove_folder(view)
        if view.is_symlink() or view.is_file():
            remove_file(view)  # a link or file left at its name
        staged = set(fetched)
        for unit in _units(self.downloads):
            for target in unit.targets:
                source = self.state / "verified" / target if target in staged else self.folder / target
                if not source.is_file():
                    continue
                link = view / target
                link.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(source, link)
                except OSError:  # a file system without hard links
                    link.symlink_to(source.resolve())
        return view

    def _refuse(self, failures: dict[Unit, str], fetch: list[Remote]) -> None:
        """Nothing placed: each failing part's new files leave staging, and the call says what was wrong."""
        failing = {t for u in failures for t in u.targets}
        for remote in fetch:
            if remote.file.target in failing:
                self._verified(remote).unlink(missing_ok=True)
        lines = [f"{self._what(unit)} is damaged: {reason}" for unit, reason in failures.items()]
        raise DownloadError(
            f"Nothing was placed in {self.folder}: {'; '.join(lines)}. These are the files {endpoint()} serves, so "
            "fetching them again may give the same: run the command again later, or set HF_ENDPOINT to another "
            "mirror. The failing files were removed from staging; the next call fetches them afresh.")


def _copy_from_hub_cache(remote: Remote, partial: Path, progress: Progress, is_cancelled: Callable[[], bool]) -> bool:
    """The same file from the user's huggingface_hub cache (e.g. MEMO's own code downloaded it), if it is there;
    its hash is checked like any download's."""
    import huggingface_hub as hub

    try:
        cached = hub.try_to_load_from_cache(remote.file.repo, remote.file.path, revision=remote.commit)
    except Exception:  # noqa: BLE001  (an unreadable cache is just not used)
        return False
    if not isinstance(cached, str) or os.path.getsize(cached) != remote.size:
        return False
    partial.unlink(missing_ok=True)
    try:
        os.link(os.path.realpath(cached), partial)  # same disk: no copy at all
        progress.advance(remote.size)
        return True
    except OSError:
        pass
    with open(cached, "rb") as src, open_new(partial) as out:
        while chunk := src.read(8 * 2**20):
            out.write(chunk)
            progress.advance(len(chunk))
            if is_cancelled():
                raise DownloadCancelled()
    return True


# ---------------------------------------------------------------------------- after the download
CONVERTED_FROM = "emo_converted_from"  # our converted file's metadata: the files it was made from (size, time)


def _sources(folder: Path, download: Download) -> str:
    """What a conversion is made from, as the converted file's metadata records it: each network file's size and
    modification time (placed files keep theirs; the download's own record trusts the same two)."""
    files = sorted(f.target for f in download.files if f.of_network)
    return json.dumps({t: rec.stamp(folder / t) for t in files}, sort_keys=True, separators=(",", ":"))


def _header(path: Path) -> tuple[dict[str, str], set[str], int] | None:
    """A safetensors file's metadata, the dtypes of its float tensors and its value count (the header only), or
    None when it is not one we can read."""
    from ..io.loading import CheckpointReader

    if path.suffix != ".safetensors" or path.is_symlink() or not path.is_file():
        return None
    try:
        with CheckpointReader(path) as reader:
            return (dict(reader.metadata), {str(d) for d in reader.dtypes.values() if d.is_floating_point},
                    sum(s.numel() for s in reader.shapes.values()))
    except Exception:  # noqa: BLE001  (damaged, or half-written by hand: not ours to trust)
        return None


def _kept(target: Path, sources: str) -> Conversion | None:
    """The converted file already there, when it is ours, made from these files and in its family's precision
    (the header read, no weight); a file we did not write, as such; None when it is to be (re)written."""
    from ..config import EMOConfig
    from ..io.loading import CONFIG_METADATA_KEY, PRECISIONS

    if not (target.exists() or target.is_symlink()):
        return None
    header = _header(target)
    if header is None or CONVERTED_FROM not in header[0]:
        return Conversion(target, "", 0, 0, written=False, kept_foreign=True)
    metadata, dtypes, values = header
    try:
        precision = EMOConfig.from_json(metadata[CONFIG_METADATA_KEY]).spec.gpu_precision
    except Exception:  # noqa: BLE001  (an unreadable config of ours: written again)
        return None
    if metadata[CONVERTED_FROM] != sources or dtypes != {str(PRECISIONS[precision])}:
        return None
    return Conversion(target, precision, target.stat().st_size, values, written=False)


def convert_download(folder: Path, download: Download, is_cancelled: Callable[[], bool] | None = None) -> Conversion:
    """The family's network as our single safetensors file, <folder>/<download.converted>, in its GPU precision
    (fp16; bf16 for MEMO), read with the strict key check. A file there from an earlier conversion of the same
    files (sizes and times as its metadata records them) is kept without reading any weight; one of ours made from
    other files is replaced; one we did not write is left as it is. The downloaded files stay: the download's
    record, its resume and its check of what is missing read them, and they may be the user's own copies.
    `is_cancelled` (Cancel in ComfyUI, Ctrl-C's flag on the command line) is asked before each tensor of these few
    GB: a cancelled conversion leaves no file, and the next download converts again."""
    from ..io.loading import PRECISIONS, check_fits, config_for, network_metadata, open_network, write_safetensors
    from ..io.model_files import find_net

    target = folder / download.converted
    sources = _sources(folder, download)
    kept = _kept(target, sources)
    if kept is not None:
        return kept
    with open_network(find_net(folder / download.model)) as reader:
        config = config_for(reader)
        check_fits(reader, config)
        precision = config.spec.gpu_precision
        dtype = PRECISIONS[precision]
        shapes = {k: (reader.shapes[k], dtype if reader.dtypes[k].is_floating_point else reader.dtypes[k])
                  for k in reader.keys()}
        metadata = {**network_metadata(config), CONVERTED_FROM: sources}

        def tensor(key: str):
            if is_cancelled is not None and is_cancelled():
                raise DownloadCancelled()
            return reader.tensor(key)

        write_safetensors(target, shapes, tensor, metadata)
    values = sum(shape.numel() for shape, _ in shapes.values())
    return Conversion(target, precision, target.stat().st_size, values, written=True)
