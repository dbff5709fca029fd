"""Our exceptions by a plain name: `emo_portrait.DownloadError`, wherever the pack was loaded from.

ComfyUI's error report names an exception `type.__module__ + "." + type.__qualname__` (execution.py's
full_type_name). ComfyUI imports a custom-node pack under a module name made of its folder's path, so without
this a DownloadError reads `/home/.../custom_nodes/emo-portrait.emo_pipeline.download.errors.DownloadError`.
"""

from __future__ import annotations

import importlib
from typing import Any

PUBLIC_MODULE = "emo_portrait"


class NamedPlainly:
    """Mixin for every exception class of ours that can reach a person: its __module__ is PUBLIC_MODULE. It
    still pickles (and copies): by the module it was defined in (`_home`), not by the plain name, which is no
    module to import."""

    _home: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._home = cls.__dict__.get("__module__", cls.__module__)
        cls.__module__ = PUBLIC_MODULE

    def __reduce__(self):
        _, args, *rest = super().__reduce__()  # the exception's own: (class, args[, state])
        return (_rebuild, (type(self)._home, type(self).__qualname__, args), *rest)


def _rebuild(home: str, qualname: str, args: tuple) -> BaseException:
    """An exception of ours from its home module and name (what NamedPlainly.__reduce__ pickles)."""
    cls: Any = importlib.import_module(home)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    return cls(*args)
