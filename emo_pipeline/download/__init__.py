"""Downloads: each family's files fetched from the hub, checked part by part, and placed where our loaders read
them."""

from .catalogue import DOWNLOADS, FAMILIES, Download, HubFile, human_size
from .errors import DownloadCancelled, DownloadError
from .fetch import Result, download, missing_files
from .transfer import Limits, Progress

__all__ = ["DOWNLOADS", "FAMILIES", "Download", "DownloadCancelled", "DownloadError", "HubFile", "Limits", "Progress",
           "Result", "download", "human_size", "missing_files"]
