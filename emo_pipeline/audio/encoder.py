"""wav2vec2 audio features, one vector per video frame, as EMO and Hallo compute them.

The CNN feature encoder runs at 50 Hz; its output is linearly interpolated to the video frame
count *before* the transformer encoder, and every transformer layer's output is kept
(hidden_states[1:]), giving [frames, layers, dim].
"""

from __future__ import annotations

import math
import pickle
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


# Heads that files of wav2vec2 carry beside the model its features come from: a CTC head (Wav2Vec2ForCTC,
# wav2vec2-base-960h) or the pretraining heads (Wav2Vec2ForPreTraining, chinese-wav2vec2-base). Not read.
HEADS = ("lm_head.", "quantizer.", "project_hid.", "project_q.")
# A transformers folder's weights, in the order looked for: safetensors, else the pickle (read weights-only).
FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def wav2vec2_key(key: str) -> str:
    """A wav2vec2 file's key in transformers' Wav2Vec2Model names: Wav2Vec2ForCTC's `wav2vec2.` prefix
    dropped, and the positional conv's weight norm in today's parametrization names."""
    key = key.removeprefix("wav2vec2.")
    return key.replace("pos_conv_embed.conv.weight_g", "pos_conv_embed.conv.parametrizations.weight.original0") \
              .replace("pos_conv_embed.conv.weight_v", "pos_conv_embed.conv.parametrizations.weight.original1")


def wav2vec2_config_from_shapes(shapes: dict[str, torch.Size], name: str = "the file") -> "Wav2Vec2Config":
    """The transformers config of a wav2vec2 state dict, read from its shapes (as ComfyUI's
    audio_encoders loader does): base (768 wide, 12 layers, group-normed convs) or large (1024,
    24 layers, layer-normed convs with bias, stable layer norm), or anything between."""
    from transformers import Wav2Vec2Config

    from ..io.loading import CheckpointError

    if "encoder.layer_norm.bias" not in shapes or "feature_projection.projection.weight" not in shapes:
        raise CheckpointError(f"{name} is not a wav2vec2 model: it has no encoder.layer_norm / feature_projection "
                              "(expected transformers' Wav2Vec2 key names, as in ComfyUI's models/audio_encoders).")
    hidden = shapes["encoder.layer_norm.bias"][0]
    if hidden % 64:  # wav2vec2's heads are 64 wide (base 12, large 16); the file cannot say otherwise
        raise CheckpointError(f"{name}: a wav2vec2 model {hidden} wide has no standard head count; put its "
                              f"transformers config beside it as {Path(name).with_suffix('.json').name}.")
    layers = 1 + max(int(k.split(".")[2]) for k in shapes if k.startswith("encoder.layers."))
    convs = 1 + max(int(k.split(".")[2]) for k in shapes if k.startswith("feature_extractor.conv_layers."))
    layer_normed = "feature_extractor.conv_layers.1.layer_norm.weight" in shapes
    pos = shapes["encoder.pos_conv_embed.conv.parametrizations.weight.original1"]
    return Wav2Vec2Config(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
        intermediate_size=shapes["encoder.layers.0.feed_forward.intermediate_dense.weight"][0],
        conv_dim=tuple(shapes[f"feature_extractor.conv_layers.{i}.conv.weight"][0] for i in range(convs)),
        conv_kernel=tuple(shapes[f"feature_extractor.conv_layers.{i}.conv.weight"][2] for i in range(convs)),
        conv_stride=(5,) + (2,) * (convs - 1),
        conv_bias="feature_extractor.conv_layers.0.conv.bias" in shapes,
        feat_extract_norm="layer" if layer_normed else "group",
        do_stable_layer_norm=layer_normed,  # the large layout pairs both, as ComfyUI assumes
        num_conv_pos_embeddings=pos[2], num_conv_pos_embedding_groups=hidden // pos[1],
    )


def read_wav2vec2_state(path: Path) -> dict[str, torch.Tensor]:
    """A wav2vec2 weights file (safetensors, or a pickle read weights-only) in transformers' Wav2Vec2Model key
    names; the CTC and pretraining heads left out."""
    from ..io.loading import CheckpointReader

    with CheckpointReader(path) as reader:
        return {wav2vec2_key(k): reader.tensor(k) for k in reader.keys() if not wav2vec2_key(k).startswith(HEADS)}


def wav2vec2_model(state: dict[str, torch.Tensor], config: "Wav2Vec2Config", name: str, dtype: torch.dtype,
                   config_name: str = "") -> "Wav2Vec2Model":
    """The Wav2Vec2Model of `config` filled strictly from `state` (masked_spec_embed, a training-time parameter,
    may be absent)."""
    from transformers import Wav2Vec2Model

    from ..io.loading import CheckpointError, compare_keys

    model = Wav2Vec2Model(config)
    report = compare_keys({k: v.shape for k, v in model.state_dict().items()}, {k: v.shape for k, v in state.items()})
    if set(report.missing) - {"masked_spec_embed"} or report.unexpected or report.wrong_shape:
        raise CheckpointError(f"{name} is not a wav2vec2 model{' for ' + config_name if config_name else ''}: "
                              f"{report.describe()}.")
    state = {k: v.float() for k, v in state.items()}
    state.setdefault("masked_spec_embed", model.masked_spec_embed.detach())  # never read at inference
    model.load_state_dict(state, strict=True)
    return model.to(dtype)


class AudioEncoder:
    """A transformers `Wav2Vec2Model` used as EMO's audio feature extractor. `normalize`: whether its feature
    extractor normalises the samples (wav2vec2-base-960h's does; chinese-wav2vec2-base's does not)."""

    def __init__(self, model: torch.nn.Module, normalize: bool = True) -> None:
        self.model = model.eval().requires_grad_(False)
        self.normalize = normalize

    @classmethod
    def from_pretrained(cls, path: str | Path, device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32, normalize: bool | None = None) -> "AudioEncoder":
        """A transformers folder (config.json + model.safetensors, or pytorch_model.bin read weights-only, as
        chinese-wav2vec2-base's pretraining checkpoint comes), or one .safetensors file: with its config beside it
        (`wav2vec2-base-960h.safetensors` + `wav2vec2-base-960h.json`), or without, in ComfyUI's audio_encoders
        conventions (transformers key names, optionally under `wav2vec2.`; base or large told apart by the
        shapes). Whether the samples are normalised: a folder's preprocessor_config.json (do_normalize) says;
        else `normalize` (the model family's front end: families.py), else yes (wav2vec2-base-960h's)."""
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        path = Path(path)
        fallback = True if normalize is None else normalize
        if path.is_file():
            from ..io.loading import read_json_object

            state = read_wav2vec2_state(path)
            config_file = path.with_suffix(".json")
            # Without a config beside it (ComfyUI's models/audio_encoders files), the shapes tell it.
            config = Wav2Vec2Config.from_dict(read_json_object(config_file, "a wav2vec2 file")) \
                if config_file.is_file() else \
                wav2vec2_config_from_shapes({k: v.shape for k, v in state.items()}, path.name)
            model = wav2vec2_model(state, config, path.name, dtype, config_file.name if config_file.is_file() else "")
            normalize = fallback
        elif (path / "config.json").is_file() and not (path / FOLDER_WEIGHTS[0]).is_file() \
                and (path / FOLDER_WEIGHTS[1]).is_file():
            # a pickle (chinese-wav2vec2-base's pytorch_model.bin, a Wav2Vec2ForPreTraining checkpoint): read by our
            # reader, weights-only, its keys mapped onto Wav2Vec2Model's and checked strictly
            from ..io.loading import read_json_object

            config = Wav2Vec2Config.from_dict(read_json_object(path / "config.json", "a transformers wav2vec2 folder"))
            model = wav2vec2_model(read_wav2vec2_state(path / FOLDER_WEIGHTS[1]), config,
                                   f"{path.name}/{FOLDER_WEIGHTS[1]}", dtype, "its config.json")
            normalize = _folder_normalize(path, fallback)
        else:
            if not (path / "config.json").is_file():
                raise FileNotFoundError(
                    f"No wav2vec2 model in {path}: expected a transformers folder with config.json and "
                    "model weights (wav2vec2-base-960h)."
                )
            from transformers.utils import logging as transformers_logging

            from ..io.loading import folder_model_error, read_json_object

            read_json_object(path / "config.json", "a transformers wav2vec2 folder")  # else a TypeError deep inside
            bar = transformers_logging.is_progress_bar_enabled()
            transformers_logging.disable_progress_bar()  # no "Loading weights" bar on every run
            try:
                model = Wav2Vec2Model.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
            except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as err:
                raise folder_model_error(path, "wav2vec2 model", err) from None
            finally:
                if bar:
                    transformers_logging.enable_progress_bar()
            normalize = _folder_normalize(path, fallback)
        return cls(model.to(device), normalize)

    def prepare(self, speech: torch.Tensor) -> torch.Tensor:
        """16 kHz samples as this model's feature extractor hands them on: normalised or as they are."""
        return normalize_speech(speech) if self.normalize else speech

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


def _folder_normalize(path: Path, fallback: bool) -> bool:
    """do_normalize of a transformers folder's preprocessor_config.json (its Wav2Vec2FeatureExtractor's default,
    true, when the key is absent), else `fallback`."""
    from ..io.loading import read_json_object

    prep = path / "preprocessor_config.json"
    return bool(read_json_object(prep, "a wav2vec2 folder").get("do_normalize", True)) if prep.is_file() else fallback
