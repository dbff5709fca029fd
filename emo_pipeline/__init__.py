"""EMO (Emote Portrait Alive) audio-to-video diffusion engine. No ComfyUI imports here."""

from .config import EMOConfig, emo_config, hallo_config, preset, tiny_config

__all__ = ["EMOConfig", "emo_config", "hallo_config", "preset", "tiny_config"]
