"""What a generation costs, counted without running it: FLOPs per stage and peak activation memory.

Both are machine-independent. FLOPs come from torch's FLOP counter (matrix products,
convolutions, attention) over the pipeline's own code on meta tensors, so full-size models cost
nothing to count; the per-step counts are combined by the same step plan the sampler follows.
Memory comes from torch's MemTracker over fake tensors: every tensor the pipeline allocates is
recorded with its size and lifetime, and the largest live total is the peak. Weights are
counted apart. Kernel workspaces and allocator fragmentation are not in it.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.weak import WeakIdKeyDictionary

from .audio.encoder import frame_count
from .config import EMOConfig
from .models.deep_cache import DeepFeatureCache
from .pipeline import EMOPipeline
from .sampling.context_windows import WindowConditions, context_windows
from .sampling.denoiser import LOW_VRAM_SCORE_BUDGET, Denoiser
from .sampling.loops import loop_for
from .sampling.presets import resolve_options, step_plan
from .sampling.steps import SamplingOptions

STAGES = ("audio encoder", "portrait", "audio projection", "reference net", "vae encode", "pose encoder",
          "denoiser, conditional rows", "denoiser, unconditional rows", "vae decode")

# The modules a clip's preparation calls, as the FLOP counter names them, by stage: the VAE's
# encoder and its quant_conv are called by `vae.encode`, not through the VAE's own forward, and
# the reference keys/values are attn1's projections (Linear) called by `prepare_reference`.
_PREPARATION_STAGES = {"ReferenceNet": "reference net", "Linear": "reference net",
                       "Encoder": "vae encode", "Conv2d": "vae encode",
                       "AudioProjection": "audio projection", "SpeedEncoder": "audio projection",
                       "PerceiverResampler": "audio projection",
                       "FaceLocator": "portrait"}


def full_size_pipeline(config: EMOConfig, device: torch.device | str = "meta", dtype: torch.dtype = torch.float16,
                       low_vram: bool = False) -> EMOPipeline:
    """The network of `config` with the VAE (sd-vae-ft-mse) and wav2vec2-base shapes (whisper-tiny for
    EchoMimic; for the tiny test configs an audio encoder of their feature shape), random or (on the meta
    device) without weights."""
    from diffusers import AutoencoderKL
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from .audio.encoder import AudioEncoder
    from .models import EMONet
    from .tiny import tiny_vae, tiny_wav2vec_config, tiny_whisper

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in the target precision: fake tensors cannot be converted
    try:
        with torch.device(device):
            net = EMONet(config)
            vae = AutoencoderKL(
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
            ) if config.vae_downscale == 8 else tiny_vae(0, config.vae_downscale)  # the demo model's own 4x VAE
    finally:
        torch.set_default_dtype(previous)
    with torch.device(device):
        if config.spec.audio_encoder == "whisper":
            audio = full_size_whisper() if config.audio_feature_dim == WHISPER_TINY_DIMS["n_audio_state"] else \
                tiny_whisper(0, config.audio_feature_dim, config.audio_feature_layers)
        elif (config.audio_feature_dim, config.audio_feature_layers) == (768, 12):
            audio = AudioEncoder(Wav2Vec2Model(Wav2Vec2Config()))  # fp32, as the pipeline runs it (Hallo too)
        else:  # the tiny test configs: an audio encoder of their feature shape
            audio = AudioEncoder(Wav2Vec2Model(tiny_wav2vec_config(config.audio_feature_dim, config.audio_feature_layers)))
    return EMOPipeline(net, vae, audio, device=device, dtype=dtype, low_vram=low_vram)


WHISPER_TINY_DIMS = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4)


def full_size_whisper():
    """whisper-tiny's encoder (EchoMimic's audio front end), built on the current default device."""
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from .audio.whisper import WhisperAudioEncoder, whisper_config

    return WhisperAudioEncoder(WhisperEncoder(whisper_config(WHISPER_TINY_DIMS)), WHISPER_TINY_DIMS)


def count_flops(fn, *args, **kwargs) -> tuple[int, dict[str, int], object]:
    """(total FLOPs, FLOPs per outermost module called (by class name), fn's result)."""
    counter = FlopCounterMode(display=False, depth=1)
    with counter, torch.no_grad():
        result = fn(*args, **kwargs)
    by_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()
                 if name != "Global" and "." not in name}
    return counter.get_total_flops(), by_module, result


@dataclass
class VideoFlops:
    seconds: float
    frames: int
    clips: int
    stages: dict[str, int]
    # (guided, reuse) → FLOPs of one Backbone step (projections of the clip's fixed tokens excluded:
    # they are made once per clip and counted with the conditional rows)
    per_step: dict[tuple[bool, bool], int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.stages.values())

    def per_second(self, stage: str | None = None) -> float:
        return (self.total if stage is None else self.stages[stage]) / self.seconds


def _probe_portrait(cfg: EMOConfig):
    """A grey portrait with a centred face box, on the CPU (its masks are computed from values)."""
    from .portrait import prepare_portrait

    image = torch.full((cfg.sample_size, cfg.sample_size, 3), 0.5)
    return prepare_portrait(image, cfg.sample_size, cfg.identity_dim, cfg.latent_size, face_box=(0.3, 0.25, 0.7, 0.75))


def video_flops(pipe: EMOPipeline, options: SamplingOptions, seconds: float, fps: float | None = None) -> VideoFlops:
    """FLOPs of a whole video of `seconds` seconds, per stage, as `iter_clips` would spend them."""
    cfg = pipe.config
    opts = resolve_options(options, cfg)
    fps = fps or cfg.fps
    if cfg.spec.sampling == "context_windows":
        return _windowed_video_flops(pipe, opts, seconds, fps)
    f, n = opts.frames_per_clip, opts.motion_frames
    rate = cfg.audio_sample_rate
    frames = frame_count(round(seconds * rate), rate, fps)
    clips = math.ceil(frames / f)
    use_cfg = opts.guidance_scale > 1.0
    stages = dict.fromkeys(STAGES, 0)
    generator = torch.Generator().manual_seed(0)

    speech = torch.zeros(round(seconds * rate), device=pipe.device)
    stages["audio encoder"], _, audio = count_flops(pipe.encode_speech, speech, fps, f)
    portrait = _probe_portrait(cfg).to(pipe.device, pipe.dtype)

    def static():  # the conditions' identity tokens and face-locator features are made once per video
        ref_latent = pipe.encode_images(portrait.pixels[None])
        return loop_for(cfg.spec.sampling).conditions(pipe, portrait, ref_latent, opts, use_cfg)

    stages["portrait"], _, conditions = count_flops(static)
    size = cfg.sample_size
    later = torch.zeros(max(n, 1), size, size, 3, device=pipe.device, dtype=pipe.dtype)
    for clip, previous, repeats in ((0, None, 1), (1, later if n else None, clips - 1)):
        if repeats <= 0:
            continue
        _, by_module, cond = count_flops(conditions, audio, clip, previous, generator)
        for name, value in by_module.items():
            stages[_PREPARATION_STAGES[name]] += value * repeats

    # One Backbone call of each kind the plan uses, with the clip's projection cache already
    # filled (a reuse step also needs a full step before it); the projections of the clip's
    # fixed tokens are then counted once per clip, for each row group the clip uses.
    plan = step_plan(opts.steps, use_cfg, opts.guidance_interval, opts.cache_interval)
    latents = torch.zeros(1, cfg.latent_channels, f, cfg.latent_size, cfg.latent_size, device=pipe.device,
                          dtype=pipe.dtype)
    t = torch.tensor(500, device=pipe.device)

    counted: dict[tuple[bool, bool, bool], int] = {}

    def step_cost(guided: bool, reuse: bool, warm: bool = True) -> int:
        if (guided, reuse, warm) in counted:
            return counted[guided, reuse, warm]
        cond.cache.clear()
        denoise = Denoiser(pipe.net.denoising_unet, cond, use_cfg, opts.guidance_scale, pipe.low_vram,
                           DeepFeatureCache() if reuse else None)
        if warm or reuse:
            with torch.no_grad():
                denoise(latents, t, guided, False)
        counted[guided, reuse, warm] = count_flops(denoise, latents, t, guided, reuse)[0]
        return counted[guided, reuse, warm]

    per_step = {kind: step_cost(*kind) for kind in sorted(set(plan))}
    conditional = {reuse: step_cost(False, reuse) for reuse in {r for _, r in plan}} if use_cfg else {}
    projections = sum(step_cost(guided, False, warm=False) - step_cost(guided, False) for guided in {g for g, _ in plan})
    stages["denoiser, conditional rows"] += projections * clips
    for guided, reuse in plan:
        rows = conditional[reuse] if use_cfg else per_step[guided, reuse]
        stages["denoiser, conditional rows"] += rows * clips
        stages["denoiser, unconditional rows"] += (per_step[guided, reuse] - rows) * clips

    z = torch.zeros(1, cfg.latent_channels, cfg.latent_size, cfg.latent_size, device=pipe.device, dtype=pipe.dtype)
    decode, _, _ = count_flops(lambda: pipe.vae.decode(z / cfg.vae_scaling_factor))
    stages["vae decode"] = decode * f * clips
    return VideoFlops(seconds, frames, clips, stages, per_step)


def _windowed_video_flops(pipe: EMOPipeline, opts: SamplingOptions, seconds: float, fps: float) -> VideoFlops:
    """video_flops for context-window sampling: one ReferenceNet pass and one portrait per video;
    every step runs the Backbone on each window."""
    cfg = pipe.config
    rate = cfg.audio_sample_rate
    frames = frame_count(round(seconds * rate), rate, fps)
    windows = context_windows(frames, opts.frames_per_clip, opts.context_overlap, cfg.spec.context_wraps)
    f = len(windows[0])
    use_cfg = opts.guidance_scale > 1.0
    stages = dict.fromkeys(STAGES, 0)
    speech = torch.zeros(round(seconds * rate), device=pipe.device)
    if cfg.spec.audio_framing == "token_windows":  # V-Express: wav2vec2's last layer, then the resampler per frame
        stages["audio encoder"] = count_flops(pipe.audio_encoder.model, speech[None])[0]
        windows_in = torch.zeros(frames, 2 * cfg.audio_window, cfg.audio_feature_dim, device=pipe.device,
                                 dtype=pipe.dtype)
        stages["audio projection"] = count_flops(pipe.net.audioproj, windows_in)[0]
    else:
        stages["audio encoder"] = count_flops(pipe.audio_encoder.features, speech)[0]
    portrait = _probe_portrait(cfg).to(pipe.device, pipe.dtype)

    def prepare():
        ref_latent = pipe.encode_images(portrait.pixels[None])
        return WindowConditions(pipe, portrait, ref_latent, use_cfg, f)

    _, by_module, conditions = count_flops(prepare)
    for name, value in by_module.items():
        stages[_PREPARATION_STAGES[name]] += value
    tokens = torch.zeros(f, cfg.audio_tokens, cfg.audio_attention_dim, device=pipe.device, dtype=pipe.dtype)
    cond = conditions(tokens)
    latents = torch.zeros(1, cfg.latent_channels, f, cfg.latent_size, cfg.latent_size, device=pipe.device,
                          dtype=pipe.dtype)
    t = torch.tensor(500, device=pipe.device)
    plan = step_plan(opts.steps, use_cfg, opts.guidance_interval, 1)
    per_step = {}
    for guided in sorted({g for g, _ in plan}):
        denoise = Denoiser(pipe.net.denoising_unet, cond, use_cfg, opts.guidance_scale, pipe.low_vram, None)
        per_step[guided, False] = count_flops(denoise, latents, t, guided, False)[0]
    conditional = per_step[False, False] if use_cfg and (False, False) in per_step else None
    if use_cfg and conditional is None:
        denoise = Denoiser(pipe.net.denoising_unet, cond, use_cfg, opts.guidance_scale, pipe.low_vram, None)
        conditional = count_flops(denoise, latents, t, False, False)[0]
    for guided, _ in plan:
        rows = conditional if use_cfg else per_step[guided, False]
        stages["denoiser, conditional rows"] += rows * len(windows)
        stages["denoiser, unconditional rows"] += (per_step[guided, False] - rows) * len(windows)
    if cfg.spec.locator_input in ("poses", "face_keypoints"):  # each window's images encoded when it runs, each step
        images = torch.zeros(f, 3, cfg.sample_size, cfg.sample_size, device=pipe.device, dtype=pipe.dtype)
        stages["pose encoder"] = count_flops(pipe.net.face_locator, images)[0] * len(windows) * len(plan)
    z = torch.zeros(1, cfg.latent_channels, cfg.latent_size, cfg.latent_size, device=pipe.device, dtype=pipe.dtype)
    stages["vae decode"] = count_flops(lambda: pipe.vae.decode(z / cfg.vae_scaling_factor))[0] * frames
    return VideoFlops(seconds, frames, len(windows), stages, per_step)


class ActivationTracker(TorchDispatchMode):
    """Bytes of the tensors alive, as ops create them and Python frees them; `peak` is the largest
    total since the last `reset`. Storages are counted once however many views share them.
    Tensors that existed before (weights) are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def reset(self) -> None:
        self.peak = self.live

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if id(storage) not in inputs and storage not in self._seen:  # not a view or in-place result
                    nbytes = storage.nbytes()
                    self._seen[storage] = nbytes
                    self.live += nbytes
                    weakref.finalize(storage, self._free, nbytes)
        self.peak = max(self.peak, self.live)
        return out


@dataclass
class ClipMemory:
    """Peak bytes (besides the weights) of one clip's stages, and the bytes of the weights on the
    device while sampling."""

    weights: int
    baseline: int  # alive before the clip: the portrait's tensors and latents, the audio features
    reference_net: int  # the clip's preparation: ReferenceNet, motion-frame encoding, audio tokens
    resident: int  # what stays for the clip's steps: conditions, cached projections, latents
    denoising: int  # the largest step, `resident` included
    vae_decode: int  # one decode chunk

    @property
    def activations(self) -> int:
        return max(self.reference_net, self.denoising, self.vae_decode)

    @property
    def total(self) -> int:
        return self.weights + self.activations


def module_bytes(*modules: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()])


def fake_pipeline(pipe_or_config: EMOPipeline | EMOConfig, dtype: torch.dtype = torch.float16) -> EMOPipeline:
    """A pipeline of the same architecture on fake tensors (no memory, no compute): of `pipe`'s
    network, VAE and wav2vec configs (with its fp8 storage and low-VRAM setting), or of a config
    with the full-size VAE and wav2vec2 shapes. Call inside a FakeTensorMode."""
    if isinstance(pipe_or_config, EMOConfig):
        return full_size_pipeline(pipe_or_config, device="cpu", dtype=dtype)
    from diffusers import AutoencoderKL
    from transformers import Wav2Vec2Model

    from .audio.encoder import AudioEncoder
    from .models import EMONet
    from .models.fp8 import has_fp8_weights, store_weights_fp8

    pipe = pipe_or_config
    previous = torch.get_default_dtype()
    torch.set_default_dtype(pipe.dtype)
    try:
        net = EMONet(pipe.config)
        vae = AutoencoderKL.from_config(pipe.vae.config)
    finally:
        torch.set_default_dtype(previous)
    if has_fp8_weights(pipe.net):
        store_weights_fp8(net)
    if pipe.config.spec.audio_encoder == "whisper":
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        from .audio.whisper import WhisperAudioEncoder

        audio = WhisperAudioEncoder(WhisperEncoder(pipe.audio_encoder.model.config), pipe.audio_encoder.dims)
    else:
        audio = AudioEncoder(Wav2Vec2Model(pipe.audio_encoder.model.config))
    return EMOPipeline(net, vae, audio, dtype=pipe.dtype, low_vram=pipe.low_vram)


def clip_memory(pipe_or_config: EMOPipeline | EMOConfig, options: SamplingOptions, dtype: torch.dtype = torch.float16,
                low_vram: bool | None = None, fp8_weights: bool = False) -> ClipMemory:
    """Peak memory of one clip, counted on fake tensors (nothing is allocated or computed): of a
    pipeline's architecture and settings, or of a config at full size in `dtype` (with `low_vram`
    and `fp8_weights` choosing the mode)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from .models.attention import attention_score_budget

    config = pipe_or_config if isinstance(pipe_or_config, EMOConfig) else pipe_or_config.config
    probe = _probe_portrait(config)
    with FakeTensorMode(allow_non_fake_inputs=True):
        pipe = fake_pipeline(pipe_or_config, dtype)
        if fp8_weights:
            pipe.store_weights_fp8()
        if low_vram is not None:
            pipe.low_vram = low_vram
        low_vram, dtype = pipe.low_vram, pipe.dtype
        # what sits on the device while sampling (in low-VRAM mode wav2vec stays on the CPU)
        weights = module_bytes(pipe.net, pipe.vae, *([] if low_vram else [pipe.audio_encoder.model]))
        opts = resolve_options(options, config)
        cfg, f = config, opts.frames_per_clip
        use_cfg = opts.guidance_scale > 1.0
        plan = step_plan(opts.steps, use_cfg, opts.guidance_interval, opts.cache_interval)
        tracker = ActivationTracker()
        budget = LOW_VRAM_SCORE_BUDGET if low_vram else None
        if cfg.spec.sampling == "context_windows":
            with tracker, torch.no_grad(), attention_score_budget(budget):
                return _window_memory(pipe, probe, opts, plan, tracker, weights)
        with tracker, torch.no_grad(), attention_score_budget(budget):
            audio = pipe.encode_speech(torch.zeros(round(cfg.audio_sample_rate * f / cfg.fps)), cfg.fps, f)
            portrait = probe.to(pipe.device, dtype)
            ref_latent = pipe.encode_images(portrait.pixels[None])
            conditions = loop_for(cfg.spec.sampling).conditions(pipe, portrait, ref_latent, opts, use_cfg)
            previous = torch.zeros(max(opts.motion_frames, 1), cfg.sample_size, cfg.sample_size, 3)
            baseline = tracker.live
            tracker.reset()
            cond = conditions(audio, 1, previous, torch.Generator().manual_seed(0))
            reference_peak = tracker.peak
            denoise = Denoiser(pipe.net.denoising_unet, cond, use_cfg, opts.guidance_scale, low_vram,
                               DeepFeatureCache() if opts.cache_interval > 1 else None)
            del cond
            latents = torch.zeros(1, cfg.latent_channels, f, cfg.latent_size, cfg.latent_size, dtype=dtype)
            t = torch.tensor(500)
            resident = tracker.live
            tracker.reset()
            for guided, reuse in sorted(set(plan), key=lambda kind: kind[1]):  # full steps before reuse ones
                denoise(latents, t, guided, reuse)
            denoising_peak = tracker.peak
            del denoise
            decode_peak = _decode_peak(pipe, opts, tracker)
    return ClipMemory(weights, baseline, reference_peak, resident, denoising_peak, decode_peak)


def _decode_peak(pipe: EMOPipeline, opts: SamplingOptions, tracker: ActivationTracker) -> int:
    """Bytes one VAE decode chunk adds (one frame in low-VRAM mode)."""
    cfg = pipe.config
    chunk = 1 if pipe.low_vram else opts.decode_chunk_size
    z = torch.zeros(min(chunk, opts.frames_per_clip), cfg.latent_channels, cfg.latent_size, cfg.latent_size,
                    dtype=pipe.dtype)
    tracker.reset()
    start = tracker.live
    pipe.vae.decode(z / cfg.vae_scaling_factor)
    return tracker.peak - start


def _window_memory(pipe: EMOPipeline, probe, opts: SamplingOptions, plan, tracker: ActivationTracker,
                   weights: int) -> ClipMemory:
    """clip_memory for context-window sampling: the per-video preparation (ReferenceNet), one window's
    Backbone call and one decode chunk. The whole video's latents stay in host memory (`host_latent_bytes`)."""
    cfg, dtype, f = pipe.config, pipe.dtype, opts.frames_per_clip
    use_cfg = opts.guidance_scale > 1.0
    portrait = probe.to(pipe.device, dtype)
    ref_latent = pipe.encode_images(portrait.pixels[None])
    baseline = tracker.live
    tracker.reset()
    poses = _BlankPoses(cfg.sample_size) if cfg.spec.locator_input in ("poses", "face_keypoints") else None
    conditions = WindowConditions(pipe, portrait, ref_latent, use_cfg, f, poses)
    reference_peak = tracker.peak
    tracker.reset()
    cond = conditions(torch.zeros(f, cfg.audio_tokens, cfg.audio_attention_dim), list(range(f)))
    encoding_peak = tracker.peak  # EchoMimic v2: the window's poses encoded before its Backbone call
    denoise = Denoiser(pipe.net.denoising_unet, cond, use_cfg, opts.guidance_scale, pipe.low_vram, None)
    del cond
    latents = torch.zeros(1, cfg.latent_channels, f, cfg.latent_size, cfg.latent_size, dtype=dtype)
    t = torch.tensor(500)
    resident = tracker.live
    tracker.reset()
    for guided in sorted({g for g, _ in plan}):
        denoise(latents, t, guided, False)
    denoising_peak = max(tracker.peak, encoding_peak)
    del denoise
    return ClipMemory(weights, baseline, reference_peak, resident, denoising_peak, _decode_peak(pipe, opts, tracker))


class _BlankPoses:
    """A window's pose images for counting memory: black frames of the model's size (drawing is on the CPU)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def tensor_frames(self, indices, draw=None) -> torch.Tensor:
        return torch.zeros(3, len(indices), self.size, self.size)


def vae_decode_memory(config: EMOConfig, chunk: int, dtype: torch.dtype = torch.float16) -> int:
    """Bytes one VAE decode of `chunk` frames adds, counted on fake tensors of the full-size VAE."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        pipe = fake_pipeline(config, dtype)
        tracker = ActivationTracker()
        with tracker, torch.no_grad():
            return _decode_peak(pipe, SamplingOptions(frames_per_clip=chunk, decode_chunk_size=chunk), tracker)


def host_latent_bytes(config: EMOConfig, num_frames: int, dtype: torch.dtype) -> int:
    """Host memory context-window sampling keeps for the whole video (the device holds one window's work): the
    latents, their prediction sum, the scheduler's output and its clean estimate (4 copies; a multistep scheduler
    briefly holds a few more during its step)."""
    if config.spec.sampling != "context_windows":
        return 0
    itemsize = torch.empty(0, dtype=dtype).element_size()
    # V-Express: and each frame's cross-attention tokens, resampled once per video (sampling/context_windows.py)
    tokens = config.audio_tokens * config.audio_attention_dim if config.spec.audio_framing == "token_windows" else 0
    return num_frames * (4 * config.latent_channels * config.latent_size**2 + tokens) * itemsize
