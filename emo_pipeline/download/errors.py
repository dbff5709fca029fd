"""The two ways a download ends early: an error said in one sentence, or a stop the user asked for."""

from ..io.errors import NamedPlainly


class DownloadError(NamedPlainly, Exception):
    """A download that cannot go on, in one sentence that says what to do."""


class DownloadCancelled(NamedPlainly, Exception):
    """Stopped on request; what arrived stays in .emo-download/partial for the next call."""
