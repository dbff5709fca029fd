"""Downloads: each family's files fetched from the hub, verified, and placed where our loaders read them."""

from .catalogue import DOWNLOADS, FAMILIES, Download, HubFile, human_size
from .fetch import DownloadCancelled, DownloadError, Progress, Result, download, missing_files

__all__ = ["DOWNLOADS", "FAMILIES", "Download", "DownloadCancelled", "DownloadError", "HubFile", "Progress", "Result",
           "download", "human_size", "missing_files"]
