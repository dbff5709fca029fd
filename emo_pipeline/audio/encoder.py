"""wav2vec2 audio features, one vector per video frame, as EMO and Hallo compute them.

The CNN feature encoder runs at 50 Hz; its output is linearly interpolated to the video frame
count *before* the transformer encoder, and every transformer layer's output is kept
(hidden_states[1:]), giving [frames, layers, dim].
"""

from __future__ import annotations

import pickle
import json
import math
from fractions import Fraction
from pathlib import Path

import torch
import torch.nn.functional as F


def frame_count(num_samples: int, sample_rate: int, fps: float) -> int:
    """ceil(seconds · fps), computed exactly for rational frame rates such as 29.97."""
    rate = Fraction(fps).limit_denominator(1001)
    return math.ceil(Fraction(num_samples) * rate / sample_rate)


def normalize_speech(speech: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance, as Wav2Vec2FeatureExtractor does (silence stays zero)."""
    speech = speech.double()
    return ((speech - speech.mean()) / torch.sqrt(speech.var(unbiased=False) + 1e-7)).float()


class AudioEncoder:
    """A transformers `Wav2Vec2Model` used as EMO's audio feature extractor."""

    def __init__(self, model: torch.nn.Module, normalize: bool = True) -> None:
        self.model = model.eval().requires_grad_(False)
        self.normalize = normalize

    @classmethod
    def from_pretrained(cls, path: str | Path, device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32) -> "AudioEncoder":
        """A transformers folder (config.json + weights), or one .safetensors file whose config is
        the .json beside it (`wav2vec2-base-960h.safetensors` + `wav2vec2-base-960h.json`)."""
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        path = Path(path)
        if path.is_file():
            config_file = path.with_suffix(".json")
            if not config_file.is_file():
                raise FileNotFoundError(f"{path.name} needs its transformers config beside it as {config_file.name}.")
            from ..loading import CheckpointError, CheckpointReader, compare_keys

            with CheckpointReader(path) as reader:
                # Wav2Vec2ForCTC files prefix the encoder with "wav2vec2." and add an "lm_head".
                state = {k.removeprefix("wav2vec2."): reader.tensor(k) for k in reader.keys() if not k.startswith("lm_head")}
            model = Wav2Vec2Model(Wav2Vec2Config.from_json_file(config_file))
            report = compare_keys({k: v.shape for k, v in model.state_dict().items()},
                                  {k: v.shape for k, v in state.items()})
            # masked_spec_embed is a training-time parameter that inference files may leave out.
            if set(report.missing) - {"masked_spec_embed"} or report.unexpected or report.wrong_shape:
                raise CheckpointError(f"{path.name} is not a wav2vec2 model for {config_file.name}: {report.describe()}.")
            model.load_state_dict(state, strict=False)
            model = model.to(dtype)
            normalize = True
        else:
            if not (path / "config.json").is_file():
                raise FileNotFoundError(
                    f"No wav2vec2 model in {path}: expected a transformers folder with config.json and "
                    "model weights (wav2vec2-base-960h)."
                )
            from transformers.utils import logging as transformers_logging

            from ..loading import folder_model_error

            bar = transformers_logging.is_progress_bar_enabled()
            transformers_logging.disable_progress_bar()  # no "Loading weights" bar on every run
            try:
                model = Wav2Vec2Model.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
            except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as err:
                raise folder_model_error(path, "wav2vec2 model", err) from None
            finally:
                if bar:
                    transformers_logging.enable_progress_bar()
            prep = path / "preprocessor_config.json"
            normalize = bool(json.loads(prep.read_text()).get("do_normalize", True)) if prep.is_file() else True
        return cls(model.to(device), normalize)

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def __call__(self, speech: torch.Tensor, num_frames: int) -> torch.Tensor:
        """speech: 1-D, 16 kHz, already normalised → features [num_frames, layers, dim] (float32)."""
        x = speech.to(self.device, self.dtype).unsqueeze(0)

        def to_frame_rate(_module, _inputs, output):
            return F.interpolate(output, size=num_frames, mode="linear", align_corners=True)

        hook = self.model.feature_extractor.register_forward_hook(to_frame_rate)
        try:
            out = self.model(x, output_hidden_states=True)
        finally:
            hook.remove()
        return torch.stack(out.hidden_states[1:], dim=2)[0].float()
