"""emotion2vec+ large: the speech-emotion encoder MEMO labels its clips with, in plain torch.

emotion2vec (Ma et al., arXiv:2312.15185) is a data2vec 2.0 audio encoder; MEMO runs FunASR's
`Emotion2vec` (funasr/models/emotion2vec/) with the `emotion2vec/emotion2vec_plus_large` weights and calls
`extract_features(source, padding_mask=None)["x"]` on each audio segment. This module is our own
implementation of that network (written from FunASR's code, none of it copied), with FunASR's state-dict
names so that its `model.pt` loads key for key:

* `modality_encoders.AUDIO.local_encoder`: wav2vec 2.0's conv feature extractor in its "layer_norm" mode,
  7 convolutions without bias (512 channels; kernels 10, 3, 3, 3, 3, 2, 2; strides 5, 2, 2, 2, 2, 2, 2:
  50 frames a second at 16 kHz), each followed by a LayerNorm over the channels computed in float32 and GELU;
* `project_features`: LayerNorm(512) and a Linear to the model width (1024);
* `relative_positional_encoder`: 5 grouped convolutions (kernel 95 // 5 = 19, 16 groups, "same" padding),
  each followed by a LayerNorm without affine and GELU, added to the projected features;
* `extra_tokens`: 10 learned tokens put in front of the frames;
* ALiBi attention biases (no position embedding): head h adds −slope_h · |i − j| to its attention logits,
  the slopes those of Press et al., each head's bias scaled by the learned `alibi_scale` (clamped at 0);
  the extra tokens get no bias;
* `context_encoder` ("prenet"): a LayerNorm, then 4 transformer blocks; then the model's 8 `blocks`. The
  blocks are post-norm (layer_norm_first false): x = norm1(x + attn(x)); x = norm2(x + mlp(x)); with
  layer_norm_first false FunASR's Emotion2vec has no final norm;
* `extract_features` drops the extra tokens and returns the frame features, [B, T, 1024].

Two parts of FunASR's module are not on that path: `modality_encoders.AUDIO.decoder` (data2vec's
pre-training decoder) and `proj` (emotion2vec+'s own 9-way emotion head; MEMO uses its own classifier
instead). They are kept as parameters with FunASR's names when the file has them, so that the file loads
key for key, and are otherwise not used.

The checkpoint: the hub's `model.pt` is a pickle of tensors in an OrderedDict (the hub lists its only
imports as OrderedDict, FloatStorage and _rebuild_tensor_v2). It is read with weights_only=True (a pickle
carrying code is refused, not run) and unwrapped as FunASR's load_pretrained_model does ("state_dict",
"model_state_dict", then "model"; a "module." prefix is taken off). The network's shape is read from the
tensors' shapes (`config_from_shapes`); every tensor of the network must be there with its shape (strict).
Entries of the file outside FunASR's module (FunASR's loader ignores them too: an EMA copy or other
training state, if the file has any) are not read; `Emotion2vec.ignored_keys` names them.

What the shapes do not say: the number of attention heads. It is taken to be the number of ALiBi heads
(the size of `alibi_scale`), as data2vec's config makes it (num_alibi_heads defaults to the model's
num_heads); for the large model 16 heads of 64. The large config (`LARGE`) is that of the hub's
config.yaml as far as it could be read (embed_dim 1024, depth 8, mlp_ratio 4, layer_norm_first false,
the feature-encoder spec, conv_pos 95/16/5, decoder 768/16/7/4); prenet depth 4, 10 extra tokens and
per-head ALiBi scales are emotion2vec's settings in FunASR's template and the base models' configs, and
agree with the size of the hub's file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..io.loading import PICKLE_SUFFIXES, CheckpointError, compare_keys, unreadable_weights_error

SAMPLE_RATE = 16000
AUDIO = "modality_encoders.AUDIO."
EXPECTED_FILE = "emotion2vec+ large's model.pt (hub: emotion2vec/emotion2vec_plus_large)"
# FunASR's load_pretrained_model looks for the network under these keys, in this order.
WRAPPERS = ("state_dict", "model_state_dict", "model")
LABELS = ("angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown")


@dataclass(frozen=True)
class Emotion2vecConfig:
    """The shape of an emotion2vec network (FunASR's model_conf names where they exist)."""

    embed_dim: int = 1024
    depth: int = 8                       # the model's blocks
    prenet_depth: int = 4                # the context encoder's blocks
    num_heads: int = 16
    num_alibi_heads: int = 16
    alibi_scale_per_layer: bool = False  # one ALiBi scale per block, else one for all
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-5
    conv_layers: tuple[tuple[int, int, int], ...] = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
    conv_pos_width: int = 95
    conv_pos_groups: int = 16
    conv_pos_depth: int = 5
    num_extra_tokens: int = 10
    decoder_dim: int = 768               # data2vec's pre-training decoder (kept for its keys, not run)
    decoder_groups: int = 16
    decoder_kernel: int = 7
    decoder_layers: int = 4              # 0: no decoder
    num_classes: int = len(LABELS)       # emotion2vec+'s own head (`proj`); 0: none

    @property
    def conv_pos_kernel(self) -> int:
        return max(3, self.conv_pos_width // self.conv_pos_depth)

    @property
    def feature_dim(self) -> int:
        return self.conv_layers[-1][0]

    def encoder_fields(self) -> dict:
        """The settings that decide the frame features (not the decoder, not the 9-way head)."""
        skip = {"decoder_dim", "decoder_groups", "decoder_kernel", "decoder_layers", "num_classes"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


LARGE = Emotion2vecConfig()


def feature_frames(num_samples: int, config: Emotion2vecConfig = LARGE) -> int:
    """Frames the conv feature extractor makes of `num_samples` samples: floor((n − k) / s + 1) per layer
    (FunASR's get_feat_extract_output_lengths); 0 when the audio is shorter than one frame's span."""
    n = num_samples
    for _, kernel, stride in config.conv_layers:
        if n < kernel:
            return 0
        n = (n - kernel) // stride + 1
    return n


def min_samples(config: Emotion2vecConfig = LARGE) -> int:
    """The fewest samples that make one frame (400 at 16 kHz: 25 ms)."""
    n = 1
    for _, kernel, stride in reversed(config.conv_layers):
        n = (n - 1) * stride + kernel
    return n


def alibi_slopes(heads: int) -> list[float]:
    """ALiBi's head slopes (Press et al.): a geometric sequence for a power of two, else that of the nearest
    power below and every other slope of the one above."""
    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(heads).is_integer():
        return power_of_2(heads)
    below = 2 ** math.floor(math.log2(heads))
    return power_of_2(below) + alibi_slopes(2 * below)[0::2][: heads - below]


def alibi_bias(time_steps: int, heads: int, device: torch.device | str | None = None) -> torch.Tensor:
    """[heads, T, T] float32: −slope_h · |i − j|."""
    slopes = torch.tensor(alibi_slopes(heads), dtype=torch.float32, device=device)
    steps = torch.arange(time_steps, device=device)
    distance = (steps[None, :] - steps[:, None]).abs().to(torch.float32)
    return slopes[:, None, None] * -distance


class _ConvLayer(nn.Sequential):
    """Conv1d (no bias), then LayerNorm over channels in float32, then GELU; FunASR's indices: 0 is the
    conv, 2.1 the norm (1 and 2.0/2.2 are its dropout and transposes, which hold nothing)."""

    def __init__(self, n_in: int, n_out: int, kernel: int, stride: int) -> None:
        super().__init__(nn.Conv1d(n_in, n_out, kernel, stride=stride, bias=False), nn.Identity(),
                         nn.Sequential(nn.Identity(), nn.LayerNorm(n_out), nn.Identity()), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self[0](x)
        norm: nn.LayerNorm = self[2][1]
        y = F.layer_norm(rearrange(x, "b c t -> b t c").float(), norm.normalized_shape, norm.weight.float(),
                         norm.bias.float(), norm.eps)
        return F.gelu(rearrange(y.to(x.dtype), "b t c -> b c t"))


class ConvFeatureExtractor(nn.Module):
    """Raw audio [B, samples] → conv features [B, 512, frames]."""

    def __init__(self, conv_layers: tuple[tuple[int, int, int], ...]) -> None:
        super().__init__()
        layers, n_in = [], 1
        for dim, kernel, stride in conv_layers:
            layers.append(_ConvLayer(n_in, dim, kernel, stride))
            n_in = dim
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        x = rearrange(source, "b t -> b 1 t")
        for layer in self.conv_layers:
            x = layer(x)
        return x


class _ProjectFeatures(nn.Sequential):
    """[B, 512, T] → LayerNorm(512) → Linear → [B, T, D]; FunASR's indices 1 and 2 (0 is a transpose)."""

    def __init__(self, feature_dim: int, embed_dim: int) -> None:
        super().__init__(nn.Identity(), nn.LayerNorm(feature_dim), nn.Linear(feature_dim, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[2](self[1](rearrange(x, "b c t -> b t c")))


class _PositionalConv(nn.Sequential):
    """The convolutional relative position encoder, [B, T, D] → [B, T, D]: `depth` grouped convs each with
    a LayerNorm without affine and GELU. FunASR's indices 1..depth (0 and depth+1 are transposes), each
    layer's conv at index 0."""

    def __init__(self, config: Emotion2vecConfig) -> None:
        k, dim = config.conv_pos_kernel, config.embed_dim
        layers = [nn.Sequential(nn.Conv1d(dim, dim, kernel_size=k, padding=k // 2, groups=config.conv_pos_groups))
                  for _ in range(config.conv_pos_depth)]
        super().__init__(nn.Identity(), *layers, nn.Identity())
        self.trim = 1 if k % 2 == 0 else 0  # FunASR's SamePad: an even kernel makes one frame too many

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rearrange(x, "b t c -> b c t")
        for layer in list(self)[1:-1]:
            x = layer[0](x)
            if self.trim:
                x = x[:, :, : -self.trim]
            x = rearrange(x, "b c t -> b t c")
            x = F.gelu(F.layer_norm(x, x.shape[-1:]))
            x = rearrange(x, "b t c -> b c t")
        return rearrange(x, "b c t -> b t c")


class Attention(nn.Module):
    """Multi-head self-attention with one qkv projection; an additive bias [B, H, T, T] (ALiBi, -inf for
    padded keys) joins the logits."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} does not split into {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        if bias is not None:
            bias = bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """A post-norm transformer block (FunASR's AltBlock with layer_norm_first false)."""

    def __init__(self, config: Emotion2vecConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.attn = Attention(dim, config.num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = self.norm1(x + self.attn(x, bias))
        return self.norm2(x + self.mlp(x))


class ContextEncoder(nn.Module):
    """The "prenet": a LayerNorm, then its blocks."""

    def __init__(self, config: Emotion2vecConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.prenet_depth))
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.norm_eps)


class Decoder(nn.Module):
    """data2vec's pre-training decoder (Decoder1d): its parameters only, with FunASR's names; not run."""

    def __init__(self, config: Emotion2vecConfig) -> None:
        super().__init__()
        k, dim = config.decoder_kernel, config.decoder_dim
        self.blocks = nn.Sequential(*(
            nn.Sequential(nn.Conv1d(config.embed_dim if i == 0 else dim, dim, kernel_size=k, padding=k // 2,
                                    groups=config.decoder_groups))
            for i in range(config.decoder_layers)))
        self.proj = nn.Linear(dim, config.embed_dim)


class AudioEncoder(nn.Module):
    """FunASR's AudioEncoder (modality_encoders.AUDIO): features, positions, extra tokens and the prenet."""

    def __init__(self, config: Emotion2vecConfig) -> None:
        super().__init__()
        self.config = config
        self.local_encoder = ConvFeatureExtractor(config.conv_layers)
        self.project_features = _ProjectFeatures(config.feature_dim, config.embed_dim)
        self.relative_positional_encoder = _PositionalConv(config)
        self.context_encoder = ContextEncoder(config)
        self.decoder = Decoder(config) if config.decoder_layers else None
        self.extra_tokens = nn.Parameter(torch.zeros(1, config.num_extra_tokens, config.embed_dim))
        layers = config.prenet_depth + config.depth if config.alibi_scale_per_layer else 1
        self.alibi_scale = nn.Parameter(torch.ones(layers, 1, config.num_alibi_heads, 1, 1))


class Emotion2vec(nn.Module):
    """emotion2vec's network with FunASR's state-dict names; `extract_features` as MEMO calls it."""

    def __init__(self, config: Emotion2vecConfig = LARGE) -> None:
        super().__init__()
        if config.num_alibi_heads > config.num_heads:
            raise ValueError(f"{config.num_alibi_heads} ALiBi heads but only {config.num_heads} attention heads")
        self.config = config
        self.modality_encoders = nn.ModuleDict({"AUDIO": AudioEncoder(config)})
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.proj = nn.Linear(config.embed_dim, config.num_classes) if config.num_classes else None
        self.ignored_keys: list[str] = []  # entries of the loaded file that are not this network's

    def _frame_padding(self, padding_mask: torch.Tensor, frames: int) -> torch.Tensor:
        """A sample padding mask [B, samples] (True: padding) → the frame mask [B, frames]: the frames past
        the conv output length of each row's unpadded samples (FunASR's convert_padding_mask)."""
        lengths = (~padding_mask.bool()).sum(-1).tolist()
        valid = torch.tensor([feature_frames(int(n), self.config) for n in lengths], device=padding_mask.device)
        return torch.arange(frames, device=padding_mask.device)[None, :] >= valid[:, None]

    def _layer_bias(self, bias: torch.Tensor, layer: int, padding: torch.Tensor | None) -> torch.Tensor:
        """Block `layer`'s attention bias: the ALiBi bias times its scale when each block has its own (one
        scale for all is applied once, before the blocks), then -inf at padded keys."""
        scale = self.modality_encoders["AUDIO"].alibi_scale
        if scale.shape[0] > 1:
            bias = bias * scale[layer].clamp_min(0).to(bias.dtype)
        if padding is not None:
            bias = bias.masked_fill(padding[:, None, None, :], float("-inf"))
        return bias

    def extract_features(self, source: torch.Tensor, padding_mask: torch.Tensor | None = None, mask: bool = False,
                         remove_extra_tokens: bool = True) -> dict[str, torch.Tensor | None]:
        """Frame features of raw 16 kHz audio [B, samples] (FunASR's extract_features, inference only):
        {"x": [B, frames, D] (with the extra tokens in front unless remove_extra_tokens),
        "padding_mask": [B, frames] bool (True: padding) or None}."""
        if mask:
            raise ValueError("Emotion2vec here is inference-only: mask=True (pre-training masking) is not supported.")
        if source.ndim != 2:
            raise ValueError(f"source must be [batch, samples], got shape {tuple(source.shape)}")
        shortest = min_samples(self.config)
        if source.shape[1] < shortest:
            raise ValueError(f"{source.shape[1]} samples is shorter than one emotion2vec frame "
                             f"({shortest} samples, {shortest / SAMPLE_RATE * 1000:.0f} ms).")
        enc: AudioEncoder = self.modality_encoders["AUDIO"]
        x = enc.project_features(enc.local_encoder(source))
        batch, frames, _ = x.shape
        frame_padding = None
        if padding_mask is not None:
            frame_padding = self._frame_padding(padding_mask, frames)
        x = x + enc.relative_positional_encoder(x)

        extra = enc.extra_tokens.shape[1]
        bias = alibi_bias(frames, self.config.num_alibi_heads, device=x.device)[None]
        scale = enc.alibi_scale.clamp_min(0)
        if scale.shape[0] == 1:
            bias = bias * scale[0].to(bias.dtype)  # [1, H, 1, 1]
        bias = F.pad(bias, (extra, 0, extra, 0))  # the extra tokens: no position bias
        if self.config.num_alibi_heads < self.config.num_heads:  # FunASR biases only the first heads
            bias = F.pad(bias, (0, 0, 0, 0, 0, self.config.num_heads - self.config.num_alibi_heads))
        bias = bias.expand(batch, -1, -1, -1)
        x = torch.cat([enc.extra_tokens.to(x.dtype).expand(batch, -1, -1), x], dim=1)
        token_padding = None if frame_padding is None else F.pad(frame_padding, (extra, 0))
        key_padding = token_padding if token_padding is not None and token_padding.any() else None
        if scale.shape[0] == 1:  # the same bias for every block: made once
            bias = self._layer_bias(bias, 0, key_padding)

        x = enc.context_encoder.norm(x)
        for i, block in enumerate(enc.context_encoder.blocks):
            x = block(x, bias if scale.shape[0] == 1 else self._layer_bias(bias, i, key_padding))
        for i, block in enumerate(self.blocks):
            x = block(x, bias if scale.shape[0] == 1 else
                      self._layer_bias(bias, self.config.prenet_depth + i, key_padding))
        if remove_extra_tokens:
            x = x[:, extra:]
            if token_padding is not None:
                token_padding = token_padding[:, extra:]
        return {"x": x, "padding_mask": token_padding}

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        """extract_features(source)["x"]: [B, frames, D]."""
        return self.extract_features(source)["x"]


def prepare_segment(samples: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """A segment as MEMO gives it to emotion2vec: 16 kHz, channel 0 of [channels, samples] (or [samples]),
    float32, layer-normed over the whole segment without affine (F.layer_norm(x, x.shape): zero mean, unit
    variance, eps 1e-5) → [1, samples]."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"emotion2vec takes {SAMPLE_RATE} Hz audio; this segment is at {sample_rate} Hz "
                         "(resample it first).")
    if samples.ndim == 2:
        samples = samples[0]
    elif samples.ndim != 1:
        raise ValueError(f"audio must be [samples] or [channels, samples], got shape {tuple(samples.shape)}")
    if samples.numel() == 0:
        raise ValueError("The audio segment is empty (0 samples).")
    if samples.numel() < min_samples():
        raise ValueError(f"The audio segment has {samples.numel()} samples, fewer than one emotion2vec frame "
                         f"({min_samples()} samples at {SAMPLE_RATE} Hz).")
    samples = samples.float()
    if not torch.isfinite(samples).all():
        raise ValueError("The audio segment holds NaN or infinite samples.")
    return F.layer_norm(samples, samples.shape)[None]


@torch.no_grad()
def segment_embedding(model: Emotion2vec, samples: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """MEMO's emotion feature of one segment: prepare_segment, extract_features, the mean over time → [D]."""
    param = next(model.parameters())
    source = prepare_segment(samples, sample_rate).to(device=param.device, dtype=param.dtype)
    return model.extract_features(source, padding_mask=None)["x"].mean(dim=1)[0]


def _count(shapes: Mapping[str, torch.Size], pattern: str, first: int = 0) -> int:
    """How many layers match `pattern` (its group: the index), checked to be numbered first, first + 1, ..."""
    found = {int(m.group(1)) for k in shapes if (m := re.fullmatch(pattern, k))}
    if found != set(range(first, first + len(found))):
        raise CheckpointError(f"the file's layers {sorted(found)} (matching {pattern}) are not numbered "
                              f"{first}, {first + 1}, ...")
    return len(found)


def config_from_shapes(shapes: Mapping[str, torch.Size]) -> Emotion2vecConfig:
    """The network shape a state dict holds (the number of heads is taken to be the number of ALiBi heads;
    the conv strides are emotion2vec's, checked against the kernels)."""
    def shape(key: str) -> torch.Size:
        if key not in shapes:
            raise CheckpointError(f"the file has no {key}: it is not an emotion2vec network ({EXPECTED_FILE}).")
        return shapes[key]

    embed_dim = shape(AUDIO + "project_features.2.weight")[0]
    conv_count = _count(shapes, re.escape(AUDIO) + r"local_encoder\.conv_layers\.(\d+)\.0\.weight")
    convs = [shape(f"{AUDIO}local_encoder.conv_layers.{i}.0.weight") for i in range(conv_count)]
    kernels = tuple(c[2] for c in convs)
    if tuple(k for _, k, _ in LARGE.conv_layers) != kernels:
        raise CheckpointError(f"the file's feature extractor (kernels {kernels}) is not emotion2vec's.")
    conv_layers = tuple((c[0], k, s) for c, (_, k, s) in zip(convs, LARGE.conv_layers))
    scale = shape(AUDIO + "alibi_scale")
    heads = scale[2]
    # FunASR's indices 1..depth: index 0 (and depth + 1) is a transpose
    pos_depth = _count(shapes, re.escape(AUDIO) + r"relative_positional_encoder\.(\d+)\.0\.weight", first=1)
    pos = shape(f"{AUDIO}relative_positional_encoder.1.0.weight")
    depth = _count(shapes, r"blocks\.(\d+)\.norm1\.weight")
    prenet = _count(shapes, re.escape(AUDIO) + r"context_encoder\.blocks\.(\d+)\.norm1\.weight")
    hidden = shape("blocks.0.mlp.fc1.weight")[0]
    decoder_layers = _count(shapes, re.escape(AUDIO) + r"decoder\.blocks\.(\d+)\.0\.weight")
    decoder = shapes.get(AUDIO + "decoder.blocks.0.0.weight")
    proj = shapes.get("proj.weight")
    return replace(
        LARGE, conv_layers=conv_layers, embed_dim=embed_dim, depth=depth, prenet_depth=prenet, num_heads=heads,
        num_alibi_heads=heads,
        alibi_scale_per_layer=scale[0] > 1, mlp_ratio=hidden / embed_dim,
        conv_pos_width=pos[2] * pos_depth, conv_pos_groups=embed_dim // pos[1], conv_pos_depth=pos_depth,
        num_extra_tokens=shape(AUDIO + "extra_tokens")[1],
        decoder_dim=decoder[0] if decoder is not None else LARGE.decoder_dim,
        decoder_groups=embed_dim // decoder[1] if decoder is not None else LARGE.decoder_groups,
        decoder_kernel=decoder[2] if decoder is not None else LARGE.decoder_kernel,
        decoder_layers=decoder_layers, num_classes=proj[0] if proj is not None else 0)


def expected_shapes(config: Emotion2vecConfig) -> dict[str, torch.Size]:
    """The state-dict layout of a config, built on the meta device."""
    with torch.device("meta"):
        net = Emotion2vec(config)
    return {k: v.shape for k, v in net.state_dict().items()}


def read_emotion2vec_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The network's tensors of an emotion2vec checkpoint, read weights-only (memory-mapped where the
    format allows), unwrapped as FunASR does; other entries of the file are left out."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"emotion2vec checkpoint not found: {path}")
    if path.suffix not in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path.name} is not a PyTorch pickle (.pt): expected {EXPECTED_FILE}.")
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as err:  # damaged, cut short, a text file, or a pickle carrying code
        raise unreadable_weights_error(path, err, EXPECTED_FILE) from None
    for wrapper in WRAPPERS:
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path.name} holds a {type(state).__name__}, not a state dict; "
                              f"expected {EXPECTED_FILE}.")
    tensors = {}
    for key, value in state.items():
        if isinstance(key, str) and isinstance(value, torch.Tensor):
            tensors[key[len("module."):] if key.startswith("module.") else key] = value
    if not tensors:
        raise CheckpointError(f"{path.name} holds no tensors; expected {EXPECTED_FILE}.")
    return tensors


def network_tensors(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The entries of a state dict that belong to FunASR's Emotion2vec (the encoder, `decoder`, `proj`), and
    the names of the others (not read, as FunASR's loader does not read them)."""
    ours = re.compile(r"(modality_encoders\.AUDIO\.|blocks\.\d+\.|proj\.)")
    kept = {k: v for k, v in state.items() if ours.match(k)}
    return kept, sorted(set(state) - set(kept))


def load_emotion2vec(path: str | Path, expected: Emotion2vecConfig | None = LARGE, device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32) -> Emotion2vec:
    """emotion2vec from its checkpoint, in eval mode. Every tensor of the network must be in the file with
    its shape (strict); with `expected` (emotion2vec+ large by default), the encoder's shape must be that
    one's (None takes the network the file holds)."""
    path = Path(path)
    tensors, ignored = network_tensors(read_emotion2vec_state(path))
    shapes = {k: v.shape for k, v in tensors.items()}
    try:
        config = config_from_shapes(shapes)
    except CheckpointError as err:
        raise CheckpointError(f"{path.name}: {err}") from None
    if expected is not None and config.encoder_fields() != expected.encoder_fields():
        differ = ", ".join(f"{k} {v} (expected {expected.encoder_fields()[k]})"
                           for k, v in config.encoder_fields().items() if v != expected.encoder_fields()[k])
        raise CheckpointError(f"{path.name} is an emotion2vec network of another shape: {differ}. "
                              f"Expected {EXPECTED_FILE}.")
    report = compare_keys(expected_shapes(config), shapes)
    if not report.ok:
        raise CheckpointError(f"{path.name} does not match the emotion2vec network it describes: "
                              f"{report.describe()}. Expected {EXPECTED_FILE}.")
    with torch.device("meta"):
        model = Emotion2vec(config)
    # copied out of the memory-mapped file, one tensor at a time, straight to the device
    model.load_state_dict({k: v.to(device=device, dtype=dtype, copy=True) for k, v in tensors.items()},
                          strict=True, assign=True)
    model.ignored_keys = ignored
    return model.eval()
