"""EMO (Emote Portrait Alive) audio-to-video diffusion engine. No ComfyUI imports here."""

import os

# onnxruntime (face models, vocal separator) starts Microsoft's telemetry when it is first imported: a
# store in ~/.cache/Microsoft and DNS lookups of mobile.events.data.microsoft.com seconds later. Only
# this variable, set before that import, stops both; a user's own setting is kept.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .config import EMOConfig, emo_config, hallo_config, preset, tiny_config  # noqa: E402

__all__ = ["EMOConfig", "emo_config", "hallo_config", "preset", "tiny_config"]
