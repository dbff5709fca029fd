"""Optional torch.compile of the Backbone, made once per pipeline and reused for every clip and run.

Compiling takes minutes the first time (and once more when the batch shape first changes, for
example when guidance stops for the last steps); compiled graphs are then cached for the
session. Where the compiler is missing or fails (no C++ compiler on a CPU machine, an
unsupported Python or GPU), the module runs as it is, with one warning.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)


class CompiledModule:
    """Calls `torch.compile(module)`; after a compiler failure, the plain module."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.compiled: Any = None
        self.error: Exception | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.error is None:
            try:
                if self.compiled is None:
                    self.compiled = torch.compile(self.module)
                return self.compiled(*args, **kwargs)
            except Exception as err:  # the compiler's errors come in many types; eager decides below
                self.error = err
                log.warning("EMO: torch.compile failed (%s: %s); running without it.", type(err).__name__,
                            str(err).splitlines()[0] if str(err) else "")
        return self.module(*args, **kwargs)
