"""whisper-tiny audio features, as EchoMimic computes them.

EchoMimic conditions on the whisper audio encoder's intermediate states: the input to the first
block and the output of every block, before the final layer norm — [T50, 5, 384] at 50 Hz over
the whole audio, encoded 30 s at a time. Each video frame then takes the ten 50 Hz states around
its time (clamped at both ends of the audio), flattened to 50 tokens of 384.

The weights are openai-whisper's `tiny.pt`, read into transformers' `WhisperEncoder` by an explicit
name map, so neither the `openai-whisper` package nor its code is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..io.loading import CheckpointError, CheckpointReader, compare_keys, unreadable_weights_error, write_safetensors

if TYPE_CHECKING:
    from transformers import WhisperConfig

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160                        # 100 mel frames a second
FEATURE_RATE = SAMPLE_RATE / HOP_LENGTH / 2  # 50 Hz: conv2 has stride 2
CONTEXT = (2, 2)                        # EchoMimic's audio_feat_length: video frames of context either side
DIMS_METADATA_KEY = "whisper_dims"
AUDIO_DIMS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer")
EXPECTED_FILE = ("openai-whisper's tiny.pt as EchoMimic's download ships it "
                 "(pretrained_weights/audio_processor/whisper_tiny.pt), or our whisper .safetensors form of it")

# transformers WhisperEncoder names → openai-whisper names (inside "encoder.").
_TOP_NAMES = {"conv1": "conv1", "conv2": "conv2", "layer_norm": "ln_post"}
_LAYER_NAMES = {
    "self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key", "self_attn.v_proj": "attn.value",
    "self_attn.out_proj": "attn.out", "self_attn_layer_norm": "attn_ln",
    "fc1": "mlp.0", "fc2": "mlp.2", "final_layer_norm": "mlp_ln",
}


def openai_name(key: str) -> str:
    """The openai-whisper name of a transformers `WhisperEncoder` state-dict key."""
    if key == "embed_positions.weight":
        return "encoder.positional_embedding"
    owner, _, param = key.rpartition(".")
    if owner.startswith("layers."):
        _, index, part = owner.split(".", 2)
        if part in _LAYER_NAMES:
            return f"encoder.blocks.{index}.{_LAYER_NAMES[part]}.{param}"
    elif owner in _TOP_NAMES:
        return f"encoder.{_TOP_NAMES[owner]}.{param}"
    raise KeyError(f"No openai-whisper name for WhisperEncoder key {key!r} (has transformers changed its layout?)")


def mel_filters(n_mels: int = 80) -> torch.Tensor:
    """librosa's Slaney mel filter bank for 16 kHz and a 400-point FFT, [n_mels, 201] (what
    openai-whisper ships as mel_filters.npz and WhisperFeatureExtractor builds)."""
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                           max_frequency=SAMPLE_RATE / 2, sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney")
    return torch.from_numpy(bank.T).float().contiguous()  # transformers gives [frequencies, mels]


def log_mel_spectrogram(speech: torch.Tensor, filters: torch.Tensor, chunk_frames: int = 3000) -> torch.Tensor:
    """openai-whisper's log-mel spectrogram of the whole audio, [n_mels, len // 160].

    Same as torch.stft(center=True, reflect padding) with its last frame dropped, but transformed
    `chunk_frames` at a time so that no complex spectrogram of the whole audio is ever held. The
    floor (8 below the loudest value) is taken over the whole audio, as whisper does.
    """
    if speech.dim() != 1:
        raise ValueError(f"Whisper features need mono audio as a 1-D tensor, got shape {tuple(speech.shape)}.")
    speech = speech.float()
    num_frames = speech.numel() // HOP_LENGTH
    if num_frames < 2:
        raise ValueError(f"Audio too short for whisper features: {speech.numel()} samples at 16 kHz; "
                         f"at least {2 * HOP_LENGTH} (20 ms) are needed.")
    padded = F.pad(speech[None, None], (N_FFT // 2, N_FFT // 2), mode="reflect")[0, 0]
    window = torch.hann_window(N_FFT, device=speech.device)
    filters = filters.to(speech.device)
    mel = torch.empty(filters.shape[0], num_frames, device=speech.device)
    for start in range(0, num_frames, chunk_frames):
        stop = min(start + chunk_frames, num_frames)
        piece = padded[start * HOP_LENGTH:(stop - 1) * HOP_LENGTH + N_FFT]
        spec = torch.stft(piece, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True)
        mel[:, start:stop] = filters @ spec.abs() ** 2
    log_spec = mel.clamp_(min=1e-10).log10_()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def frame_tokens(features: torch.Tensor, frames: int | torch.Tensor, fps: float) -> torch.Tensor:
    """EchoMimic's per-video-frame audio window: [T50, L, D] → [F, 10·L, D] for frames 0..F-1 (an int
    F), or for the given frame indices (a tensor; the sampler takes a window's frames at a time, so
    the tokens of the whole video, 77 KB a frame, never exist at once).

    Frame i is centred on 50 Hz index int(i·50/fps) and takes indices centre-4 … centre+5, each
    clamped into the audio; the ten states come outer, the layers inner.
    """
    length = features.shape[0]
    if length == 0:
        raise ValueError("No whisper features to take frame windows from (empty audio).")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}.")
    if isinstance(frames, int):
        frames = torch.arange(frames)
    num_frames = frames.numel()
    frames = frames.to(features.device, torch.float64)
    centre = torch.floor(frames * FEATURE_RATE / fps).long()  # (i·50)/fps, as int(i*50/fps) rounds it
    offsets = torch.arange(-2 * CONTEXT[0], 2 * (CONTEXT[1] + 1), device=features.device)
    index = (centre[:, None] + offsets[None]).clamp_(0, length - 1)
    return features[index].reshape(num_frames, index.shape[1] * features.shape[1], features.shape[2])


def whisper_config(dims: dict) -> "WhisperConfig":
    """A transformers WhisperConfig for openai-whisper ModelDimensions (the encoder part)."""
    from transformers import WhisperConfig

    state = dims["n_audio_state"]
    return WhisperConfig(
        num_mel_bins=dims["n_mels"], max_source_positions=dims["n_audio_ctx"], d_model=state,
        encoder_layers=dims["n_audio_layer"], encoder_attention_heads=dims["n_audio_head"],
        encoder_ffn_dim=4 * state, activation_function="gelu",
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0,
        # The decoder fields keep transformers' defaults: WhisperEncoder does not read them.
    )


class WhisperAudioEncoder:
    """A transformers `WhisperEncoder` used as EchoMimic's audio feature extractor."""

    def __init__(self, model: torch.nn.Module, dims: dict) -> None:
        self.model = model.eval().requires_grad_(False)
        self.dims = dict(dims)
        self.filters = mel_filters(self.model.config.num_mel_bins)

    @classmethod
    def from_file(cls, path: str | Path, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> "WhisperAudioEncoder":
        """openai-whisper `tiny.pt` (a pickle of {"dims", "model_state_dict"}, read with
        weights_only=True) or our .safetensors of the encoder with the dims in its metadata.
        The encoder keys must match exactly; the text decoder's keys are ignored."""
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Whisper model not found: {path}. Expected {EXPECTED_FILE}.")
        with _WhisperFile(path) as source:
            with torch.device("meta"):
                model = WhisperEncoder(whisper_config(source.dims))
            layout = model.state_dict()
            names = {openai_name(k): k for k in layout}
            found = {k: s for k, s in source.shapes.items() if not k.startswith("decoder.")}
            report = compare_keys({name: layout[key].shape for name, key in names.items()}, found)
            if not report.ok:
                raise CheckpointError(f"{path.name} does not hold a whisper encoder for its dims "
                                      f"({_dims_text(source.dims)}): {report.describe()}. Expected {EXPECTED_FILE}.")
            state = {}
            for name, key in names.items():
                tensor = source.tensor(name)  # copied: no parameter stays backed by the file's memory map
                state[key] = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype,
                                       copy=True)
        model.load_state_dict(state, strict=True, assign=True)
        return cls(model, source.dims)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def layers(self) -> int:
        """States kept per 50 Hz step: the block input plus each block's output."""
        return self.model.config.encoder_layers + 1

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    @property
    def segment_frames(self) -> int:
        """Mel frames per encoder call (3000, 30 s): WhisperEncoder accepts no other length."""
        return self.model.config.max_source_positions * 2

    @torch.no_grad()
    def features(self, speech: torch.Tensor) -> torch.Tensor:
        """speech: 1-D, mono, 16 kHz → [T50, layers, dim] float32 on the model's device.

        The audio is encoded one 30-s segment at a time (the last zero-padded); of each, only the
        states covering real audio are kept, so memory beyond the result does not grow with length.
        """
        mel = log_mel_spectrogram(speech.to(self.device), self.filters)
        total = mel.shape[1]
        parts = []
        for seek in range(0, total, self.segment_frames):
            segment = mel[:, seek:seek + self.segment_frames]
            keep = segment.shape[1] // 2
            segment = F.pad(segment, (0, self.segment_frames - segment.shape[1]))
            parts.append(self._encode(segment, keep))
        return torch.cat(parts)

    def __call__(self, speech: torch.Tensor, num_frames: int, fps: float) -> torch.Tensor:
        """speech: 1-D, mono, 16 kHz → EchoMimic's audio tokens [num_frames, 10·layers, dim]."""
        return frame_tokens(self.features(speech), num_frames, fps)

    def _encode(self, segment: torch.Tensor, keep: int) -> torch.Tensor:
        """One [n_mels, 3000] segment → the first `keep` steps of [1500, layers, dim].

        WhisperEncoder's own hidden_states end with the output *after* its final layer norm, so
        the states are taken with hooks: the first block's input and every block's output.
        """
        states: list[torch.Tensor] = []

        def block_input(_module, args, kwargs):
            states.append((args[0] if args else kwargs["hidden_states"])[0, :keep])

        def block_output(_module, _args, output):
            states.append((output[0] if isinstance(output, tuple) else output)[0, :keep])

        blocks = self.model.layers
        hooks = [blocks[0].register_forward_pre_hook(block_input, with_kwargs=True)]
        hooks += [block.register_forward_hook(block_output) for block in blocks]
        try:
            self.model(input_features=segment[None].to(self.dtype))
        finally:
            for hook in hooks:
                hook.remove()
        if len(states) != self.layers:
            raise RuntimeError(f"Expected {self.layers} whisper encoder states, got {len(states)}.")
        return torch.stack(states, dim=1).float()


def save_whisper(encoder: WhisperAudioEncoder, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write the encoder as one .safetensors file in openai-whisper's names (`encoder.*`), its
    dims as JSON in the metadata: what `from_file` reads back."""
    state = encoder.model.state_dict()
    names = {openai_name(k): k for k in state}
    shapes = {name: (state[key].shape, dtype if dtype is not None and state[key].is_floating_point()
                     else state[key].dtype) for name, key in names.items()}
    metadata = {DIMS_METADATA_KEY: json.dumps(encoder.dims), "format": "whisper-encoder"}
    return write_safetensors(path, shapes, lambda name: state[names[name]], metadata)


def _dims_text(dims: dict) -> str:
    return ", ".join(f"{k} {dims[k]}" for k in AUDIO_DIMS)


class _WhisperFile:
    """dims, names and shapes of a whisper checkpoint; tensors read one at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader: CheckpointReader | None = None
        if path.suffix == ".safetensors":
            self._reader = CheckpointReader(path)
            text = self._reader.metadata.get(DIMS_METADATA_KEY)
            if text is None:
                self._reader.close()
                raise CheckpointError(f"{path.name} carries no '{DIMS_METADATA_KEY}' metadata, so it is not one of "
                                      f"our whisper encoder files. Expected {EXPECTED_FILE}.")
            try:
                dims = json.loads(text)
            except ValueError:
                dims = None
            self.shapes = self._reader.shapes
        else:
            checkpoint = self._load_pickle(path)
            if not (isinstance(checkpoint, dict) and isinstance(checkpoint.get("model_state_dict"), dict)
                    and all(isinstance(v, torch.Tensor) for v in checkpoint["model_state_dict"].values())):
                raise CheckpointError(f"{path.name} is not an openai-whisper checkpoint (a dict with 'dims' and "
                                      f"'model_state_dict'). Expected {EXPECTED_FILE}.")
            dims = checkpoint.get("dims")
            self._state = checkpoint["model_state_dict"]
            self.shapes = {k: v.shape for k, v in self._state.items()}
        if not (isinstance(dims, dict) and all(isinstance(dims.get(k), int) and dims[k] > 0 for k in AUDIO_DIMS)
                and dims["n_audio_state"] % dims["n_audio_head"] == 0):
            self.close()
            raise CheckpointError(f"{path.name} has no usable whisper dims (need positive integers "
                                  f"{', '.join(AUDIO_DIMS)}), got {dims!r}. Expected {EXPECTED_FILE}.")
        self.dims = dims

    @staticmethod
    def _load_pickle(path: Path):
        try:
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
        except Exception as err:  # truncated, corrupt, unsafe or not weights at all: said as it is
            raise unreadable_weights_error(path, err, EXPECTED_FILE) from None

    def tensor(self, name: str) -> torch.Tensor:
        return self._reader.tensor(name) if self._reader is not None else self._state[name]

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._state = None

    def __enter__(self) -> "_WhisperFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
