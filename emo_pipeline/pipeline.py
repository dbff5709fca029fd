"""EMOPipeline: portrait + audio → video frames, for audio of any length.

The pipeline is the facade over the engine's parts: the models (network, VAE, audio encoder), their
device and precision, the audio and portrait encoding, and the VAE. `iter_clips` hands the encoded
inputs to the sampling loop the model's family names (sampling/loops.py):

* motion frames (EMO, Hallo, Hallo2; sampling/motion_frames.py): each clip of f frames continues from
  the last n frames of the previous one, and its frames are handed out before the next clip starts;
* MEMO's memory (sampling/memo_memory.py): the same, with every past clip kept in a memory instead;
* context windows (EchoMimic; sampling/context_windows.py): the whole video's latents are denoised
  together in overlapping windows, then decoded chunk by chunk.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F

from .audio.encoder import AudioEncoder, frame_count, normalize_speech
from .audio.features import AudioFeatures
from .compile import CompiledModule
from .config import EMOConfig
from .io.advice import where
from .io.errors import NamedPlainly
from .models import EMONet
from .models.fp8 import move, store_weights_fp8
from .portrait import DEMO_MODEL, Portrait, demo_photo_warning, looks_like_photograph, prepare_portrait
from .sampling.loops import iter_video
from .sampling.presets import resolve_options
from .sampling.steps import SamplingOptions
from .vae import vae_downscale

log = logging.getLogger(__name__)  # "emo_pipeline.pipeline": ComfyUI relays its warnings to the graph


class NotFiniteError(NamedPlainly, RuntimeError):
    """NaN or infinite values where frames are made: a precision's overflow, or damaged weights."""


def not_finite_latents(dtype: torch.dtype) -> str:
    if dtype == torch.float32:
        return ("The video's latents became NaN or infinite in fp32, which would have given black frames: the "
                "network's weights are damaged; download the model again.")
    precision = str(dtype).removeprefix("torch.")
    cure = where("set Load EMO Model's precision to fp32 (or bf16 on a GPU that has it) and run again",
                 "run again with --dtype fp32 (or bf16 on a GPU that has it)")
    return (f"The video's latents became NaN or infinite: the network overflowed {precision} at this size, which "
            f"would have given black frames. {cure[0].upper()}{cure[1:]}.")


def finite(values: torch.Tensor) -> bool:
    """Whether every value is finite; on the meta device (no values: shapes and devices checked) it is taken as so."""
    return values.device.type == "meta" or bool(torch.isfinite(values).all())


AUDIO_SEGMENT_SECONDS = 60.0


def check_dtype_supported(device: torch.device, dtype: torch.dtype) -> None:
    """Fail early, with a readable message, when the device cannot run the chosen precision."""
    try:
        x = torch.randn(1, 8, 8, 8, device=device, dtype=dtype)
        F.conv2d(x, torch.randn(8, 8, 3, 3, device=device, dtype=dtype), padding=1)
        F.group_norm(x, 4)
        q = x.flatten(2).transpose(1, 2)[None]
        F.scaled_dot_product_attention(q, q, q)
    except (RuntimeError, NotImplementedError) as err:
        name = str(dtype).replace("torch.", "")
        raise ValueError(
            f"{name} is not supported on {device}: {err}. Choose fp32 (or bf16 on recent CPUs/GPUs)."
        ) from None


class EMOPipeline:
    """`low_vram`: guided rows run one after the other instead of as one batch, the VAE decodes
    one frame at a time, attention is split so that no call holds its full score matrix, and
    wav2vec stays on the CPU (it runs once per audio, before sampling). Frames are the same as
    without it, within round-off. `compile`: the Backbone runs through
    torch.compile (see compile.py)."""

    def __init__(self, net: EMONet, vae: torch.nn.Module, audio_encoder: AudioEncoder,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, low_vram: bool = False,
                 compile: bool = False) -> None:
        shrink = vae_downscale(vae)
        if shrink and shrink != net.config.vae_downscale:
            raise ValueError(
                f"The VAE shrinks images {shrink}x but the network {net.config.name!r} expects "
                f"{net.config.vae_downscale}x latents: use the VAE that came with this network (sd-vae-ft-mse for "
                "Hallo and EMO weights, models/demo/vae for the demo model).")
        self.net = net.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.audio_encoder = audio_encoder
        self._low_vram = low_vram
        self._compiled = CompiledModule(self.net.denoising_unet)
        self.compile = compile
        self.device, self.dtype = torch.device("cpu"), torch.float32
        # Seconds spent per stage, summed over calls; filled only when `profile` is on (it syncs the GPU).
        self.profile = False
        self.timings: dict[str, float] = {}
        self.to(device, dtype)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the stage `name` into `timings` when `profile` is on."""
        if not self.profile:
            yield
            return
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        yield
        sync()
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    @property
    def config(self) -> EMOConfig:
        return self.net.config

    @property
    def backbone(self) -> torch.nn.Module:
        """The denoising UNet the sampling loops call: through torch.compile when `compile` is on."""
        return self._compiled if self.compile else self.net.denoising_unet

    def store_weights_fp8(self) -> "EMOPipeline":
        """Keep the network's linear and conv weights in scaled fp8 (half the memory of fp16),
        up-cast per layer when it runs. The VAE and wav2vec keep their precision."""
        store_weights_fp8(self.net)
        return self

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "EMOPipeline":
        """Move every model once; they then stay there between calls. `dtype` is the precision the
        models compute in (and store in, unless the network's weights are stored in fp8)."""
        device, dtype = torch.device(device), dtype or self.dtype
        check_dtype_supported(device, dtype)
        move(self.net, device, dtype)  # fp8-stored weights stay fp8
        move(self.vae, device, dtype)
        # wav2vec stays in fp32, as in Hallo: it is small and its features feed every frame.
        move(self.audio_encoder.model, self.audio_device(device), torch.float32)
        self.device, self.dtype = device, dtype
        return self

    def audio_device(self, device: torch.device | None = None) -> torch.device:
        """Where wav2vec runs: the pipeline's device, or the CPU in low-VRAM mode (a meta pipeline,
        which only counts, has no data to move and keeps it on meta)."""
        device = device or self.device
        return torch.device("cpu") if self.low_vram and device.type != "meta" else device

    @property
    def low_vram(self) -> bool:
        return self._low_vram

    @low_vram.setter
    def low_vram(self, value: bool) -> None:
        self._low_vram = value
        move(self.audio_encoder.model, self.audio_device(), torch.float32)

    # ------------------------------------------------------------------ inputs
    def prepare_portrait(self, image: torch.Tensor, **kwargs) -> Portrait:
        """image [H, W, C] in 0..1; see `portrait.prepare_portrait` for face_box, face_mask, identity."""
        cfg = self.config
        if cfg.name == DEMO_MODEL and looks_like_photograph(image):
            log.warning(demo_photo_warning())
        return prepare_portrait(image, cfg.sample_size, cfg.identity_dim, cfg.latent_size, **kwargs)

    def encode_audio(self, waveform: torch.Tensor, sample_rate: int, fps: float | None = None,
                     clip_length: int | None = None) -> AudioFeatures:
        """Any channel count and rate → per-frame features; audio is padded to whole clips as Hallo does."""
        from .audio.resample import prepare_speech

        fps = fps or self.config.fps
        if not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be a positive number of frames per second, not {fps}.")
        speech = prepare_speech(waveform, sample_rate, self.config.audio_sample_rate)
        if self.config.spec.audio_encoder == "whisper":
            return self._encode_whisper(speech, fps)
        # normalised as the wav2vec2's own feature extractor does it (chinese-wav2vec2-base's does not: JoyHallo)
        prepare = getattr(self.audio_encoder, "prepare", normalize_speech)
        if self.config.spec.audio_framing == "token_windows":
            return self._encode_token_windows(prepare(speech), fps)
        return self.encode_speech(prepare(speech), fps, clip_length or self.config.frames_per_clip)

    def _encode_token_windows(self, speech: torch.Tensor, fps: float) -> AudioFeatures:
        """V-Express's front end: wav2vec2's last layer over the whole clip, at two tokens a frame."""
        from .audio.token_windows import encode_token_windows

        with self.stage("audio features"):
            features = encode_token_windows(self.audio_encoder, speech, fps, self.config.frames_per_clip,
                                            self.config.audio_sample_rate)
        if features.features.shape[1] != self.config.audio_feature_dim:
            raise ValueError(
                f"The audio encoder gives {features.features.shape[1]} features a step; this model expects "
                f"{self.config.audio_feature_dim}. Use the wav2vec2 model the checkpoint was trained with "
                f"({self.config.spec.wav2vec_model}).")
        return features

    def _encode_whisper(self, speech: torch.Tensor, fps: float) -> AudioFeatures:
        """EchoMimic's front end: whisper-tiny layers at 50 Hz, 10 of them around each frame."""
        cfg = self.config
        num_frames = frame_count(speech.numel(), cfg.audio_sample_rate, fps)
        if num_frames < 1:
            raise ValueError("The audio is empty.")
        encoder = self.audio_encoder
        if (getattr(encoder, "layers", None), getattr(encoder, "dim", None)) != (cfg.audio_feature_layers,
                                                                                   cfg.audio_feature_dim):
            raise ValueError(
                f"This {cfg.spec.title} model needs whisper features of {cfg.audio_feature_layers} layers × "
                f"{cfg.audio_feature_dim}; the loaded audio encoder does not give them. Use the whisper tiny.pt "
                "that came with the model (pretrained_weights/audio_processor/whisper_tiny.pt).")
        with self.stage("audio features"):
            features = encoder.features(speech).cpu()  # 7.7 KB per 20 ms: it waits on the CPU
        return AudioFeatures(speech, features, num_frames, fps, cfg.frames_per_clip)

    def encode_speech(self, speech: torch.Tensor, fps: float, clip_length: int) -> AudioFeatures:
        """wav2vec features of normalised speech at the model's rate, padded to whole clips of `clip_length`."""
        sr = self.config.audio_sample_rate
        num_frames = frame_count(speech.numel(), sr, fps)
        if num_frames < 1:
            raise ValueError("The audio is empty.")
        padded = -(-num_frames // clip_length) * clip_length
        # Hallo pads the normalised samples by whole frames of int(sr / fps) samples before wav2vec.
        pad = (padded - num_frames) * int(sr // fps)
        speech_padded = F.pad(speech, (0, pad))
        # wav2vec attends over its whole input, so its memory grows with the square of the length.
        # Up to AUDIO_SEGMENT_SECONDS the audio is encoded whole, exactly as Hallo does; longer
        # audio is encoded in segments of that length (whole clips), as Hallo2 does for long audio.
        segment = max(clip_length, int(AUDIO_SEGMENT_SECONDS * fps) // clip_length * clip_length)
        parts = []
        with self.stage("audio features"):
            for start in range(0, padded, segment):
                end = min(start + segment, padded)
                a, b = round(start * sr / fps), (round(end * sr / fps) if end < padded else speech_padded.numel())
                parts.append(self.audio_encoder(speech_padded[a:b], end - start))
        features = torch.cat(parts)
        if features.shape[1:] != (self.config.audio_feature_layers, self.config.audio_feature_dim):
            raise ValueError(
                f"The audio encoder gives {features.shape[1]} layers of {features.shape[2]} features; this model "
                f"expects {self.config.audio_feature_layers} × {self.config.audio_feature_dim}. Use the wav2vec2 "
                f"model the checkpoint was trained with ({self.config.spec.wav2vec_model})."
            )
        return AudioFeatures(speech, features, num_frames, fps, clip_length)

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] in [-1, 1] → latents [N, 4, S/8, S/8] (distribution mean × scale, as Hallo)."""
        pixels = pixels.to(self.device, self.vae.dtype)
        return (self.vae.encode(pixels).latent_dist.mean * self.config.vae_scaling_factor).to(self.dtype)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, chunk_size: int = 8) -> torch.Tensor:
        """[N, 4, h, w] → frames [N, H, W, 3] float32 in 0..1 on the CPU, decoded chunk_size at a time.

        A NaN or infinity would come out as a black frame (clamped, then cast to bytes: EchoMimic v2's all-black
        fp16 videos), so none passes: latents that are not finite stop the render with the cure (the network
        overflowed: another precision), and a VAE that overflows fp16 at this size (its decoder's activations
        grow with the frame) decodes in fp32 from then on, said once."""
        frames = []
        for part in latents.split(max(1, chunk_size)):
            if not finite(part):
                raise NotFiniteError(not_finite_latents(self.dtype))
            image = self.vae.decode((part.to(self.device, self.vae.dtype) / self.config.vae_scaling_factor)).sample
            if not finite(image) and self.vae.dtype != torch.float32:
                log.warning("The VAE overflowed %s decoding %d² frames: it decodes in fp32 from now on (%.0f MB more).",
                            str(self.vae.dtype).removeprefix("torch."), image.shape[-1],
                            sum(p.numel() for p in self.vae.parameters()) * 2 / 1e6)
                self.vae.to(torch.float32)
                image = self.vae.decode(part.float() / self.config.vae_scaling_factor).sample
            if not finite(image):
                raise NotFiniteError("The VAE gave NaN or infinite pixels from finite latents in fp32: its weights are "
                                     "damaged; download the VAE (sd-vae-ft-mse) again.")
            frames.append((image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu())
        return torch.cat(frames)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(self, portrait: Portrait, audio: AudioFeatures, options: SamplingOptions | None = None) -> torch.Tensor:
        """All frames [T, H, W, 3] (T = audio.num_frames), float32 in 0..1 on the CPU."""
        return torch.cat(list(self.iter_clips(portrait, audio, options)))

    @torch.no_grad()
    def iter_clips(self, portrait: Portrait, audio: AudioFeatures,
                   options: SamplingOptions | None = None) -> Iterator[torch.Tensor]:
        """Yield the frames [f_k, H, W, 3] in order as soon as they are decoded: each clip's (the last one
        trimmed), or for context-window families each decoded chunk."""
        opts = resolve_options(options or SamplingOptions(), self.config)
        yield from iter_video(self, portrait, audio, opts)
