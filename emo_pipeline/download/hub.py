"""What the hub says of a file (one metadata request through huggingface_hub, so HF_ENDPOINT, HF_HUB_OFFLINE and
the usual tokens apply), and each of its refusals in one sentence of ours."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from urllib.parse import urlparse

from .catalogue import HubFile
from .errors import DownloadError


@dataclass
class Remote:
    """What the hub says of one file."""
    file: HubFile
    url: str  # where its bytes come from (a CDN for LFS files)
    size: int
    etag: str  # sha256 for LFS files, the git blob hash for others
    commit: str


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


def host_of(url: str) -> str:
    """How a message names the server behind `url`: the hub's endpoint, or the other host it sent us to."""
    if urlparse(url).netloc == urlparse(endpoint()).netloc:
        return endpoint()
    return f"{urlparse(url).scheme}://{urlparse(url).netloc} (where {endpoint()} sends large files)"


def network_errors() -> tuple[type[Exception], ...]:
    """What the hub's client raises when the network or the hub fails (its HTTP library depends on its version)."""
    from huggingface_hub import errors

    found: list[type[Exception]] = [errors.HfHubHTTPError, errors.OfflineModeIsEnabled, ConnectionError, TimeoutError]
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


def explain(error: Exception, f: HubFile, revision: str, url: str | None = None) -> DownloadError:
    """One sentence for what the hub (or the host at `url`) or the network said."""
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
    return DownloadError(f"Could not reach {host_of(url or endpoint())} ({type(error).__name__}: {error}). Check the "
                         "network connection, or set HF_ENDPOINT to a mirror; what was fetched so far is kept and "
                         "resumed on the next call.")


def ask_hub(f: HubFile, revision: str) -> Remote:
    """The file's size, hash, commit and download location (one metadata request)."""
    hub, _ = _hub()
    url = hub.hf_hub_url(f.repo, f.path, revision=revision, endpoint=endpoint())
    try:
        meta = hub.get_hf_file_metadata(url, endpoint=endpoint())
    except network_errors() as error:
        raise explain(error, f, revision) from None
    if meta.size is None or not meta.etag or not meta.commit_hash:
        raise DownloadError(f"{endpoint()} gave no size, hash or commit for {f.repo}/{f.path}: it does not "
                            "answer as a Hugging Face hub does. Check HF_ENDPOINT.")
    return Remote(f, meta.location, meta.size, meta.etag, meta.commit_hash)


def token_headers(url: str) -> dict[str, str]:
    """The hub's headers for a GET of `url`: the token goes to the hub only, never to the host a large file is
    fetched from (its URL is signed)."""
    hub, _ = _hub()
    on_hub = urlparse(url).netloc == urlparse(endpoint()).netloc
    return dict(hub.utils.build_hf_headers(token=None if on_hub else False))


def session():
    """huggingface_hub's HTTP client (proxies, certificates and user agent as the user set them up)."""
    from huggingface_hub.utils import get_session

    return get_session()
