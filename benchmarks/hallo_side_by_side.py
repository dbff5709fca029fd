"""One guided denoising step of Hallo's own network and of ours, on the same random weights.

Hallo's network (imported from a checkout of fudan-generative-vision/hallo named by HALLO_PATH,
never copied here) is built as its inference script builds it: the reference UNet and the
denoising UNet from the SD1.5 UNet config (only the config is needed, no SD1.5 weights), the
denoising UNet with the `unet_additional_kwargs` of the checkout's configs/inference/default.yaml,
plus the face locator and the identity and audio projections. Every floating parameter is drawn
at random with a fixed seed (normalisation scales around 1, everything else around 0, so that
the zero-initialised layers are not zero), and our EMONet takes the very same tensors (same
state-dict keys, loaded with `assign=True`: one copy of the weights in memory).

Both sides then get the same inputs: noisy latents, timestep, identity embedding, face-region
mask, background/face/lip masks, audio features, and the latents of the portrait and the motion
frames (random latents: no VAE is run). Each side runs its ReferenceNet once on the portrait and
motion frames, as at the start of a clip, and is then timed on one guided step (both batch
items, [unconditional, conditional], and the guidance `uncond + 3.5 * (cond - uncond)`), the two
sides alternating so that both see the same machine state. The relative difference of the two
predictions, max|ours - hallo| / max|hallo|, is printed with the times.

    HALLO_PATH=/path/to/hallo python benchmarks/hallo_side_by_side.py                # 128², 4 frames
    HALLO_PATH=/path/to/hallo python benchmarks/hallo_side_by_side.py --size 512 --frames 16 --repeats 3
    HALLO_PATH=/path/to/hallo python benchmarks/hallo_side_by_side.py --flops        # 512², 16+2 frames, fp16
    HALLO_PATH=/path/to/hallo python benchmarks/hallo_side_by_side.py --profile      # and each side's operators

`--whole-clip` times whole clips instead: Hallo's own FaceAnimatePipeline at its default.yaml
(40 DDIM steps with its zero-SNR settings, cfg 3.5), called as scripts/inference.py calls it for a
first clip (its audio projection, the portrait and two copies of it as motion frames), against our
EMOPipeline.generate at each preset, on the same random weights, the same inputs and one random
full-size VAE (the sd-vae-ft-mse layout) shared by both. After a one-step warm-up of each side, every
round runs each side once (the order turning each round); the medians give the wall-time ratio per
preset, printed beside the FLOP ratio of the same clips counted on meta tensors (emo_pipeline/cost.py;
Hallo's clip is our quality clip with its denoising replaced by 40 of Hallo's own guided steps and two
more VAE encodings). The relative difference of the quality preset's decoded frames from Hallo's is
printed too (Hallo's reference features are kept in the network's precision, as in the one-step
comparison). wav2vec is run by neither side (the features are given).

    HALLO_PATH=/path/to/hallo python benchmarks/hallo_side_by_side.py --whole-clip --size 64 --frames 2 --rounds 3

The network always has its full channel widths (SD1.5's 320/640/1280/1280): its fp32 weights
take about 9.7 GB, held once. `--size` and `--frames` shrink only the inputs; the defaults finish
in a few minutes on a small CPU. `--flops` counts one guided step of each network at the
config's full size on meta tensors (no memory, no compute); `benchmarks/flops.py` imports
`hallo_step_flops` from here for its "Hallo's own code" row.

Hallo's code needs `einops` (pip install einops). Two shims make it run with today's libraries;
both are applied here, at run time, and change nothing in Hallo's checkout or in our engine:

* xformers stand-in. Hallo's motion module does `import xformers, xformers.ops` at import time,
  but only calls xformers when memory-efficient attention is switched on, which Hallo's
  inference never does. An empty module object is registered in `sys.modules` under those names
  (after diffusers is imported, so that diffusers still sees no xformers).
* diffusers 0.27's gradient-checkpointing flag. Hallo's inference calls
  `enable_gradient_checkpointing()` on both UNets and never puts the denoising UNet in eval mode,
  so that UNet runs in training mode with checkpointing on: its blocks take the
  `if self.training and self.gradient_checkpointing:` branch, the only one that passes the motion
  frames and `motion_scale` on (and that skips the 8x8 blocks' temporal modules). Today's
  diffusers no longer sets that attribute through Hallo's `_set_gradient_checkpointing(module,
  value)` override, so we do what 0.27 did: set `gradient_checkpointing = True` on every
  submodule that has the attribute, and keep the denoising UNet in `.train()` (the reference
  UNet in `.eval()`, as `from_pretrained` leaves it). Everything runs under `torch.no_grad()`,
  where a checkpointed call is just the call.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import os
import statistics
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emo_pipeline.audio.features import AudioFeatures  # noqa: E402
from emo_pipeline.config import EMOConfig, hallo_config  # noqa: E402
from emo_pipeline.pipeline import EMOPipeline  # noqa: E402
from emo_pipeline.portrait import Portrait, prepare_portrait  # noqa: E402
from emo_pipeline.sampling.denoiser import Denoiser  # noqa: E402
from emo_pipeline.sampling.motion_frames import MotionFrameConditions  # noqa: E402
from emo_pipeline.sampling.presets import PRESETS, resolve_options  # noqa: E402
from emo_pipeline.sampling.steps import SamplingOptions  # noqa: E402

SEED = 0
WEIGHT_STD = 0.02
TIMESTEP = 500  # any step of the schedule: the network's cost does not depend on it
FACE_BOX = (0.3, 0.25, 0.7, 0.75)  # x0, y0, x1, y1 of the square portrait

from reference_common import SD15_UNET_CONFIG, install_xformers_stand_in, quiet  # noqa: E402  (SD15: the layout both of Hallo's UNets start from)

# What UNet3DConditionModel.from_pretrained_2d changes in it (use_landmark=False keeps 4 channels).
HALLO_3D_BLOCKS = {
    "_class_name": "UNet3DConditionModel",
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
    "mid_block_type": "UNetMidBlock3DCrossAttn",
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# ---------------------------------------------------------------------------- Hallo's code
def hallo_checkout() -> Path:
    """HALLO_PATH, checked; exits with a one-line message if it is not a Hallo checkout."""
    path = os.environ.get("HALLO_PATH")
    if not path:
        sys.exit("HALLO_PATH is not set: set it to a checkout of fudan-generative-vision/hallo.")
    if not (Path(path) / "hallo" / "models" / "unet_3d.py").is_file():
        sys.exit(f"HALLO_PATH={path} is not a Hallo checkout (no hallo/models/unet_3d.py in it).")
    return Path(path)


def import_hallo(path: Path, package: str = "hallo") -> types.SimpleNamespace:
    """Hallo's model classes, imported from the checkout at `path` (`package`: JoyHallo's code is Hallo's under
    the name joyhallo)."""
    try:
        import einops  # noqa: F401
    except ImportError:
        sys.exit("Hallo's code needs einops: pip install einops")
    install_xformers_stand_in()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    module = lambda name: importlib.import_module(f"{package}.models.{name}")  # noqa: E731
    return types.SimpleNamespace(
        UNet2DConditionModel=module("unet_2d_condition").UNet2DConditionModel,
        UNet3DConditionModel=module("unet_3d").UNet3DConditionModel,
        FaceLocator=module("face_locator").FaceLocator,
        ImageProjModel=module("image_proj").ImageProjModel,
        AudioProjModel=module("audio_proj").AudioProjModel,
        ReferenceAttentionControl=module("mutual_self_attention").ReferenceAttentionControl,
    )


def hallo_inference_settings(path: Path) -> dict:
    """Hallo's configs/inference/default.yaml."""
    import yaml

    return yaml.safe_load((path / "configs" / "inference" / "default.yaml").read_text())


def enable_checkpointing_as_diffusers_027(unet: nn.Module) -> None:
    """What `enable_gradient_checkpointing()` did in diffusers 0.27 (see the module docstring)."""
    for module in unet.modules():
        if hasattr(module, "gradient_checkpointing"):
            module.gradient_checkpointing = True


def build_hallo_net(hallo: types.SimpleNamespace, settings: dict, config: EMOConfig) -> nn.Module:
    """Hallo's `Net` (scripts/inference.py): the same five modules under the same names, so the
    same state-dict keys as its net.pth; modes and checkpointing flags as its inference sets them."""
    sd15 = dict(SD15_UNET_CONFIG, block_out_channels=list(config.block_out_channels))
    reference_unet = hallo.UNet2DConditionModel.from_config(sd15)
    denoising_unet = hallo.UNet3DConditionModel.from_config(dict(sd15, **HALLO_3D_BLOCKS),
                                                            **settings["unet_additional_kwargs"])
    if "center_input_sample" not in denoising_unet.config:  # not an __init__ argument: today's diffusers drops it
        denoising_unet.register_to_config(center_input_sample=False)
    net = nn.Module()
    net.reference_unet = reference_unet
    net.denoising_unet = denoising_unet
    net.face_locator = hallo.FaceLocator(conditioning_embedding_channels=config.block_out_channels[0])
    net.imageproj = hallo.ImageProjModel(cross_attention_dim=denoising_unet.config.cross_attention_dim,
                                         clip_embeddings_dim=512, clip_extra_context_tokens=4)
    net.audioproj = hallo.AudioProjModel(seq_len=5, blocks=12, channels=768, intermediate_dim=512, output_dim=768,
                                         context_tokens=32)
    net.requires_grad_(False)
    for unet in (reference_unet, denoising_unet):
        enable_checkpointing_as_diffusers_027(unet)
    reference_unet.eval()  # from_pretrained returns it in eval mode
    denoising_unet.train()  # from_config leaves it in training mode, and Hallo never calls .eval()
    return net


@torch.no_grad()
def randomize_(net: nn.Module, seed: int = SEED, std: float = WEIGHT_STD) -> nn.Module:
    """Every floating parameter random normal (normalisation scales 1 + noise, the rest noise)."""
    generator = torch.Generator().manual_seed(seed)
    scales = {id(m.weight) for m in net.modules() if isinstance(m, (nn.GroupNorm, nn.LayerNorm))
              and getattr(m, "weight", None) is not None}
    for p in net.parameters():
        if p.is_floating_point():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float32) * std
            p.copy_(noise + 1 if id(p) in scales else noise)
    return net


# ---------------------------------------------------------------------------- inputs
@dataclass
class StepInputs:
    """What both sides get: one clip's inputs before either network's own preparation."""

    config: EMOConfig
    latents: torch.Tensor  # [1, 4, F, h, w]
    timestep: torch.Tensor  # 0-dim
    ref_latents: torch.Tensor  # [1 + n, 4, h, w]: the portrait's latent, then the n motion frames'
    identity: torch.Tensor  # [512], the face embedding
    audio: torch.Tensor  # [F, 12, 768]: wav2vec features, one per frame

    @property
    def frames(self) -> int:
        return self.latents.shape[2]

    def to(self, device: torch.device | str, dtype: torch.dtype) -> "StepInputs":
        move = lambda t: t.to(device, dtype)  # noqa: E731
        return StepInputs(self.config, move(self.latents), self.timestep.to(device), move(self.ref_latents),
                          move(self.identity), move(self.audio))


def make_inputs(config: EMOConfig) -> StepInputs:
    """Random inputs at `config`'s size, on the CPU in fp32 (fixed seed)."""
    generator = torch.Generator().manual_seed(SEED + 1)
    f, n, h = config.frames_per_clip, config.motion_frames, config.latent_size

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator)

    return StepInputs(
        config=config,
        latents=randn(1, config.latent_channels, f, h, h),
        timestep=torch.tensor(TIMESTEP),
        ref_latents=randn(1 + n, config.latent_channels, h, h),
        identity=randn(config.identity_dim),
        audio=randn(f, config.audio_feature_layers, config.audio_feature_dim),
    )


def make_portrait(inputs: StepInputs) -> Portrait:
    """Our portrait conditions (face-region mask, background/face/lip masks, identity), on the CPU
    in fp32: a random image (fixed seed) with a face box (the masks are computed from the box, not the
    pixels). Not a flat grey one: Hallo's pipeline re-normalises a [-1, 1] tensor with no negative value
    (diffusers' VaeImageProcessor takes it for [0, 1]), which a real photo never triggers."""
    cfg = inputs.config
    image = torch.rand((cfg.sample_size, cfg.sample_size, 3), generator=torch.Generator().manual_seed(SEED + 3))
    return prepare_portrait(image, cfg.sample_size, cfg.identity_dim, cfg.latent_size, face_box=FACE_BOX,
                            identity=inputs.identity)


# ---------------------------------------------------------------------------- Hallo's step
def hallo_guided_step(net: nn.Module, hallo: types.SimpleNamespace, inputs: StepInputs, portrait: Portrait,
                      motion_scale: list[float], guidance: float) -> Callable[[], torch.Tensor]:
    """Hallo's FaceAnimatePipeline up to its first step (hallo/animate/face_animate.py): the
    reference pass, then a function that runs one guided step of its denoising UNet."""
    f = inputs.frames
    face_emb = inputs.identity[None]
    encoder_hidden_states = torch.cat([net.imageproj(torch.zeros_like(face_emb)), net.imageproj(face_emb)])

    writer = hallo.ReferenceAttentionControl(net.reference_unet, do_classifier_free_guidance=True, mode="write",
                                             batch_size=1, fusion_blocks="full")
    reader = hallo.ReferenceAttentionControl(net.denoising_unet, do_classifier_free_guidance=True, mode="read",
                                             batch_size=1, fusion_blocks="full")
    # the face-region image [1, 3, S, S] → "b f c h w" → repeated over the frames → [1, 3, F, S, S]
    face_region = portrait.face_region[None, None].repeat(1, f, 1, 1, 1).transpose(1, 2)
    face_features = net.face_locator(face_region)
    mask_cond_fea = torch.cat([torch.zeros_like(face_features), face_features])

    # image_processor.py: each level's mask viewed as [1, h*w]; inference.py repeats it over the
    # clip's frames; the pipeline doubles it for guidance
    def level_masks(kind: str) -> list[torch.Tensor]:
        return [torch.cat([getattr(m, kind)[None].repeat(f, 1)] * 2) for m in portrait.masks]

    # scripts/inference.py: audioproj on the clip's [1, F, 5, 12, 768] windows; zeros for guidance
    audio_tokens = net.audioproj(_audio_windows(inputs))
    audio_embedding = torch.cat([torch.zeros_like(audio_tokens), audio_tokens])

    # the reference image and motion frames, "(b f) c h w" latents, repeated for guidance
    t = inputs.timestep
    net.reference_unet(inputs.ref_latents.repeat(2, 1, 1, 1), torch.zeros_like(t),
                       encoder_hidden_states=encoder_hidden_states, return_dict=False)
    # update() casts the reference features to fp16 by default: a no-op in Hallo's fp16 inference,
    # a rounding of them in any other precision, so they are kept in the network's own here
    reader.update(writer, dtype=inputs.latents.dtype)

    kwargs = dict(encoder_hidden_states=encoder_hidden_states, mask_cond_fea=mask_cond_fea,
                  full_mask=level_masks("full"), face_mask=level_masks("face"), lip_mask=level_masks("lip"),
                  audio_embedding=audio_embedding, motion_scale=motion_scale, return_dict=False)

    def step() -> torch.Tensor:
        latent_model_input = torch.cat([inputs.latents] * 2)
        noise_pred = net.denoising_unet(latent_model_input, t, **kwargs)[0]
        uncond, cond = noise_pred.chunk(2)
        return uncond + guidance * (cond - uncond)

    return step


def _audio_windows(inputs: StepInputs) -> torch.Tensor:
    """[1, F, 5, 12, 768]: each frame's features with ±2 neighbours, clamped at the clip's ends.
    (Hallo's own `process_audio_emb` does the same, but lives in scripts/inference.py, which
    imports its whole data pipeline; ours makes the same windows for both sides.)"""
    from emo_pipeline.models.frame_windows import frame_windows

    return frame_windows(inputs.audio[None], inputs.config.audio_context)


# ---------------------------------------------------------------------------- our step
def build_our_pipeline(config: EMOConfig, hallo_net: nn.Module, dtype: torch.dtype,
                       vae: nn.Module | None = None) -> EMOPipeline:
    """An EMOPipeline whose network holds Hallo's tensors (built on meta, then assigned), with `vae`
    (shared with Hallo's pipeline) or, for the one-step comparison, a tiny one that is never run."""
    from emo_pipeline.audio.encoder import AudioEncoder
    from emo_pipeline.models import EMONet
    from emo_pipeline.tiny import tiny_vae, tiny_wav2vec

    with torch.device("meta"):
        net = EMONet(config)
    net.load_state_dict(hallo_net.state_dict(), strict=True, assign=True)
    # wav2vec is never run here (audio features are given)
    return EMOPipeline(net, vae if vae is not None else tiny_vae(downscale=config.vae_downscale),
                       AudioEncoder(tiny_wav2vec()), device=hallo_net.denoising_unet.device, dtype=dtype)


def our_guided_step(pipe: EMOPipeline, inputs: StepInputs, portrait: Portrait, region_weights: list[float],
                    guidance: float) -> Callable[[], torch.Tensor]:
    """Our clip preparation (static and clip conditions, the ReferenceNet pass), then a function
    that runs one guided step."""
    cfg = pipe.config
    opts = resolve_options(SamplingOptions(frames_per_clip=inputs.frames, motion_frames=cfg.motion_frames,
                                           guidance_scale=guidance, region_weights=tuple(region_weights)), cfg)
    audio = AudioFeatures(torch.zeros(1), inputs.audio, inputs.frames, cfg.fps, inputs.frames)
    conditions = MotionFrameConditions(pipe, portrait, inputs.ref_latents[:1], opts, True)
    # Motion frames are given as latents: the previous frames' pixels only stand in for them, and
    # encode_images (the VAE) hands out the given motion latents instead.
    n = cfg.motion_frames
    previous = torch.zeros(n, cfg.sample_size, cfg.sample_size, 3, device=pipe.device, dtype=pipe.dtype) if n else None
    pipe.encode_images = lambda pixels: inputs.ref_latents[1:1 + len(pixels)]
    try:
        cond = conditions(audio, 0, previous, torch.Generator().manual_seed(SEED))
    finally:
        del pipe.encode_images
    denoise = Denoiser(pipe.net.denoising_unet, cond, True, guidance, False, None)
    return lambda: denoise(inputs.latents, inputs.timestep, True, False)


# ---------------------------------------------------------------------------- whole clips
HALLO_CLIP_SEED = 42  # scripts/inference.py: generator = torch.manual_seed(42)


def shared_vae(seed: int = SEED + 2) -> nn.Module:
    """The sd-vae-ft-mse layout with random weights (as randomize_ draws them): one VAE for both sides."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4)
    return randomize_(vae.requires_grad_(False).eval(), seed)


def hallo_scheduler(settings: dict):
    """The DDIM scheduler scripts/inference.py makes from default.yaml (zero-SNR settings included)."""
    from diffusers import DDIMScheduler

    kwargs = dict(settings["noise_scheduler_kwargs"])
    if settings.get("enable_zero_snr"):
        kwargs.update(rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction")
    return DDIMScheduler(**kwargs)


def hallo_clip(net: nn.Module, vae: nn.Module, settings: dict, inputs: StepInputs,
               portrait: Portrait) -> Callable[[int | None], torch.Tensor]:
    """One whole clip as scripts/inference.py makes its first one: the audio projection, then Hallo's
    FaceAnimatePipeline (VAE encoding of the portrait and its stand-in motion frames, face locator,
    ReferenceNet, the denoising loop with its DDIM scheduler, per-frame VAE decoding). Returns a function
    of the step count (None: default.yaml's) giving the frames [F, S, S, 3] in 0..1."""
    face_animate = importlib.import_module("hallo.animate.face_animate")

    class ReferenceAttentionControl(face_animate.ReferenceAttentionControl):
        """Hallo's, keeping the reference features in the network's precision (as the one-step comparison
        does): its update() rounds them to fp16 by default, a no-op in its fp16 inference."""

        def update(self, writer, dtype=None):
            return super().update(writer, dtype=dtype or net.denoising_unet.dtype)

    face_animate.ReferenceAttentionControl = ReferenceAttentionControl  # the name its pipeline looks up
    pipeline = face_animate.FaceAnimatePipeline(
        vae=vae, reference_unet=net.reference_unet, denoising_unet=net.denoising_unet,
        face_locator=net.face_locator, image_proj=net.imageproj, scheduler=hallo_scheduler(settings))
    pipeline.set_progress_bar_config(disable=True)
    f, n, size = inputs.frames, settings["data"]["n_motion_frames"], inputs.config.sample_size
    weights = [settings["pose_weight"], settings["face_weight"], settings["lip_weight"]]
    # the first clip: the portrait followed by n copies of it standing in for the motion frames
    ref_image = portrait.pixels[None].repeat(1 + n, 1, 1, 1)[None]

    def level_masks(kind: str) -> list[torch.Tensor]:  # inference.py repeats each level's mask over the clip
        return [getattr(m, kind)[None].repeat(f, 1) for m in portrait.masks]

    def run(steps: int | None = None) -> torch.Tensor:
        with quiet(), contextlib.redirect_stderr(io.StringIO()):  # its per-frame decode's tqdm bar, notices
            audio_tensor = net.audioproj(_audio_windows(inputs))
            video = pipeline(ref_image=ref_image, audio_tensor=audio_tensor, face_emb=inputs.identity[None],
                             face_mask=portrait.face_region[None], pixel_values_full_mask=level_masks("full"),
                             pixel_values_face_mask=level_masks("face"), pixel_values_lip_mask=level_masks("lip"),
                             width=size, height=size, video_length=f,
                             num_inference_steps=steps or settings["inference_steps"],
                             guidance_scale=settings["cfg_scale"], generator=torch.manual_seed(HALLO_CLIP_SEED),
                             motion_scale=weights).videos
        return video[0].permute(1, 2, 3, 0)  # [3, F, S, S] → [F, S, S, 3]

    return run


def our_clip(pipe: EMOPipeline, inputs: StepInputs, portrait: Portrait, preset_name: str,
             region_weights: list[float]) -> Callable[[int | None], torch.Tensor]:
    """One whole clip through EMOPipeline.generate with a preset (its steps unless given): VAE encoding,
    ReferenceNet, audio projection, the sampling loop, VAE decoding; frames [F, S, S, 3] in 0..1."""
    cfg = pipe.config
    audio = AudioFeatures(torch.zeros(1), inputs.audio, inputs.frames, cfg.fps, inputs.frames)

    def run(steps: int | None = None) -> torch.Tensor:
        options = SamplingOptions(seed=HALLO_CLIP_SEED, preset=preset_name, steps=steps,
                                  frames_per_clip=inputs.frames, motion_frames=cfg.motion_frames,
                                  region_weights=tuple(region_weights))
        return pipe.generate(portrait, audio, options)

    return run


def clip_flops(config: EMOConfig, presets: list[str], steps: int) -> dict[str, int]:
    """FLOPs of one whole clip at `config`'s size, counted on meta tensors (emo_pipeline/cost.py), the
    audio encoder left out (neither side runs it here): ours per preset, and Hallo's own code: our quality
    clip with its denoising replaced by `steps` of Hallo's own guided step (hallo_step_flops) and two more
    VAE encodings (Hallo encodes the portrait's stand-in motion frames too)."""
    from emo_pipeline.cost import count_flops, full_size_pipeline, video_flops

    pipe = full_size_pipeline(config)
    seconds = config.frames_per_clip / config.fps
    denoising = ("denoiser, conditional rows", "denoiser, unconditional rows")
    flops = {}
    with quiet():
        for name in presets:
            cost = video_flops(pipe, SamplingOptions(preset=name), seconds)
            flops[name] = cost.total - cost.stages["audio encoder"]
        quality = video_flops(pipe, SamplingOptions(preset="quality"), seconds)
        pixels = torch.zeros(1, 3, config.sample_size, config.sample_size, device="meta", dtype=pipe.dtype)
        encode = count_flops(pipe.encode_images, pixels)[0]
    hallo_step = hallo_step_flops(config)
    flops["hallo"] = (quality.total - quality.stages["audio encoder"] - sum(quality.stages[s] for s in denoising)
                      + steps * hallo_step + 2 * encode)
    return flops


class NetworkClock:
    """Seconds spent inside a module's forward calls (forward hooks), summed until reset."""

    def __init__(self, module: nn.Module) -> None:
        self.seconds, self._start = 0.0, 0.0
        module.register_forward_pre_hook(self._enter)
        module.register_forward_hook(self._leave)

    def _enter(self, *_) -> None:
        self._start = time.perf_counter()

    def _leave(self, *_) -> None:
        self.seconds += time.perf_counter() - self._start


def compare_clips(config: EMOConfig, presets: list[str], rounds: int, steps_run: int | None = None) -> None:
    """Whole clips: Hallo's own pipeline at its default (default.yaml: 40 DDIM steps, cfg 3.5) and ours at
    each preset, on the same random weights and inputs, in rounds that run every side once (the order
    turning each round), after a one-step warm-up of each; medians of the wall times beside the FLOPs.
    `steps_run`: run that many steps of each clip (a whole number of DeepCache cycles for fast) and scale the
    time spent in the denoising network to the clip's own steps, the rest of the clip counted as measured."""
    path = hallo_checkout()
    hallo, settings = import_hallo(path), hallo_inference_settings(path)
    weights = [settings["pose_weight"], settings["face_weight"], settings["lip_weight"]]
    print(f"machine: {machine()}")
    print(f"whole clip: {config.sample_size}² ({config.latent_size}² latents), {config.frames_per_clip} frames + "
          f"{config.motion_frames} motion frames, fp32, channels {'/'.join(map(str, config.block_out_channels))}, "
          f"full-size VAE (sd-vae-ft-mse layout); Hallo: {settings['inference_steps']} DDIM steps, cfg "
          f"{settings['cfg_scale']:g}, its FaceAnimatePipeline; ours: presets {', '.join(presets)}", flush=True)
    flops = clip_flops(config, presets, settings["inference_steps"])
    print("FLOPs of one clip (meta tensors): " + ", ".join(f"{k} {v / 1e12:.3f} T" for k, v in flops.items()),
          flush=True)

    start = time.perf_counter()
    with quiet():
        hallo_net = randomize_(build_hallo_net(hallo, settings, config))
    vae = shared_vae()
    pipe = build_our_pipeline(config, hallo_net, torch.float32, vae)
    print(f"weights built in {time.perf_counter() - start:.0f} s, shared by both pipelines", flush=True)
    inputs = make_inputs(config)
    portrait = make_portrait(inputs)
    runs = {"hallo": hallo_clip(hallo_net, vae, settings, inputs, portrait)}
    runs.update({name: our_clip(pipe, inputs, portrait, name, weights) for name in presets})
    clocks = {"hallo": NetworkClock(hallo_net.denoising_unet)}
    clocks.update(dict.fromkeys(presets, NetworkClock(pipe.net.denoising_unet)))
    steps = {"hallo": settings["inference_steps"]}
    steps.update({name: resolve_options(SamplingOptions(preset=name), config).steps for name in presets})
    cycle = {name: resolve_options(SamplingOptions(preset=name), config).cache_interval for name in presets}
    run_steps = {name: min(n, -(-steps_run // cycle.get(name, 1)) * cycle.get(name, 1)) if steps_run else n
                 for name, n in steps.items()}
    if steps_run:
        print("steps run, the denoising network's time scaled to the clip's steps: " + ", ".join(
            f"{name} {run_steps[name]} of {n}" for name, n in steps.items()), flush=True)
    with torch.no_grad():
        for name, run in runs.items():
            seconds, _ = timed(functools.partial(run, 1))
            print(f"  warm-up (1 step) {name:8s} {seconds:8.1f} s", flush=True)
        times: dict[str, list[float]] = {name: [] for name in runs}
        frames: dict[str, torch.Tensor] = {}
        names = list(runs)
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                clocks[name].seconds = 0.0
                seconds, out = timed(functools.partial(runs[name], run_steps[name]))
                network = clocks[name].seconds
                scaled = seconds + network * (steps[name] / run_steps[name] - 1)
                times[name].append(scaled)
                frames.setdefault(name, out)
                print(f"  round {r + 1} {name:8s} {seconds:8.1f} s, of which {network:.1f} s in the denoising "
                      f"network; {steps[name]} steps: {scaled:8.1f} s  (load average {os.getloadavg()[0]:.1f})",
                      flush=True)
            print_clip_table(times, flops, steps, r + 1)
    if "quality" in frames:
        a, b = frames["hallo"], frames["quality"]
        print(f"quality preset vs Hallo ({run_steps['quality']} DDIM steps each), decoded frames {list(b.shape)}: "
              f"max|ours - hallo| / max|hallo| = {(b - a).abs().max() / a.abs().max():.2e}")
    print(f"machine at the end: load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


def print_clip_table(times: dict[str, list[float]], flops: dict[str, int], steps: dict[str, int], runs: int) -> None:
    hallo_s = statistics.median(times["hallo"])
    print(f"\nmedians of {runs} run(s) per side; ratios are ours / Hallo's own code (below 1: ours is faster)")
    print("| ours | steps | Hallo s | ours s | wall-time ratio | FLOP ratio |")
    print("|---|---|---|---|---|---|")
    for name, values in times.items():
        if name != "hallo":
            ours_s = statistics.median(values)
            print(f"| {name} | {steps[name]} | {hallo_s:.1f} | {ours_s:.1f} | {ours_s / hallo_s:.3f} | "
                  f"{flops[name] / flops['hallo']:.3f} |")
    print(flush=True)


# ---------------------------------------------------------------------------- FLOPs
def _count(fn: Callable[[], torch.Tensor]) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def _meta_steps(config: EMOConfig, ours: bool = True, dtype: torch.dtype = torch.float16):
    """Hallo's guided step (and ours), prepared at `config`'s size on meta tensors."""
    from emo_pipeline.cost import full_size_pipeline

    path = hallo_checkout()
    hallo, settings = import_hallo(path), hallo_inference_settings(path)
    weights = [settings["pose_weight"], settings["face_weight"], settings["lip_weight"]]
    inputs = make_inputs(config)
    portrait = make_portrait(inputs).to("meta", dtype)
    inputs = inputs.to("meta", dtype)
    with quiet(), torch.no_grad():
        with torch.device("meta"):
            hallo_net = build_hallo_net(hallo, settings, config).to(dtype)
        hallo_step = hallo_guided_step(hallo_net, hallo, inputs, portrait, weights, config.guidance_scale)
        if not ours:
            return hallo_step, None
        pipe = full_size_pipeline(config, device="meta", dtype=dtype)
        ours_step = our_guided_step(pipe, inputs, portrait, weights, config.guidance_scale)
        ours_step()  # fills the clip's projection cache, as every step after a clip's first finds it
    return hallo_step, ours_step


def hallo_step_flops(config: EMOConfig) -> int:
    """FLOPs of one guided denoising step of Hallo's own network at `config`'s size
    (batch [uncond, cond], fp16, reference features and motion frames given), on meta tensors."""
    hallo_step, _ = _meta_steps(config, ours=False)
    with quiet():
        return _count(hallo_step)


# ---------------------------------------------------------------------------- report
def machine() -> str:
    from emo_pipeline.cli.benchmark import cpu_name

    model = cpu_name()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"load average {load} (1, 5, 15 min)")


def timed(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def compare(config: EMOConfig, dtype: torch.dtype, repeats: int, profile: bool = False) -> None:
    """Build both networks on the same random weights, prepare the same clip, time one guided
    step of each (alternating, after one untimed call of each) and print the comparison."""
    path = hallo_checkout()
    hallo, settings = import_hallo(path), hallo_inference_settings(path)
    weights = [settings["pose_weight"], settings["face_weight"], settings["lip_weight"]]
    guidance = float(settings["cfg_scale"])
    print(f"machine: {machine()}")
    print(f"sizes: {config.sample_size}² ({config.latent_size}² latents), {config.frames_per_clip} frames + "
          f"{config.motion_frames} motion frames, batch [uncond, cond] = 2, {str(dtype)[6:]}, "
          f"channels {'/'.join(map(str, config.block_out_channels))}, guidance {guidance:g}, motion_scale {weights}")

    start = time.perf_counter()
    torch.manual_seed(SEED)
    with quiet():
        hallo_net = randomize_(build_hallo_net(hallo, settings, config)).to(dtype)
    pipe = build_our_pipeline(config, hallo_net, dtype)
    count = sum(p.numel() for p in hallo_net.parameters())
    ours = pipe.net.state_dict()
    shared = all(t.data_ptr() == ours[k].data_ptr() for k, t in hallo_net.state_dict().items())
    print(f"weights: {count / 1e9:.3f} B parameters, shared by both networks: {shared} "
          f"(built in {time.perf_counter() - start:.0f} s)")

    inputs = make_inputs(config)
    portrait = make_portrait(inputs).to("cpu", dtype)
    inputs = inputs.to("cpu", dtype)
    with torch.no_grad(), quiet():
        steps = {"hallo": hallo_guided_step(hallo_net, hallo, inputs, portrait, weights, guidance),
                 "ours": our_guided_step(pipe, inputs, portrait, weights, guidance)}
        outputs = {name: step() for name, step in steps.items()}  # warm-up (ours fills its projection cache)
        times: dict[str, list[float]] = {name: [] for name in steps}
        for i in range(repeats):
            for name, step in steps.items():
                seconds, out = timed(step)
                times[name].append(seconds)
                print(f"  run {i + 1} {name:5s} {seconds:8.2f} s", flush=True)
                if i == 0:
                    outputs[name] = out
    a, b = outputs["hallo"].float(), outputs["ours"].float()
    print(f"relative difference max|ours - hallo| / max|hallo| = {(b - a).abs().max() / a.abs().max():.2e} "
          f"(max|hallo| = {a.abs().max():.3e}, shape {list(a.shape)})")
    for label, stat in (("median", statistics.median), ("fastest", min)):
        hallo_s, ours_s = stat(times["hallo"]), stat(times["ours"])
        print(f"{label} of {repeats}: hallo {hallo_s:.2f} s, ours {ours_s:.2f} s, ours/hallo = {ours_s / hallo_s:.3f}")
    if profile:
        with torch.no_grad(), quiet():
            profile_steps(steps, 2)


PROFILED_OPS = {"addmm": "aten::addmm", "mm": "aten::mm", "bmm": "aten::bmm", "convolution": "convolution"}


def profile_steps(steps: dict[str, Callable[[], torch.Tensor]], repeats: int) -> None:
    """Each side's guided step under torch.profiler (`repeats` steps): its operator time (the sum of every
    operator's own time) and, for the FLOP-heavy operators, FLOPs (counted on the same call), time and rate, so
    that a gap between the wall-time and FLOP ratios can be told apart from the machine's noise."""
    from torch.profiler import ProfilerActivity, profile

    totals = {}
    for name, step in steps.items():
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        flops = {str(op).split(".")[-1]: n for op, n in counter.get_flop_counts()["Global"].items()}
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                step()
        own = {e.key: e.self_cpu_time_total / repeats / 1e6 for e in prof.key_averages()}
        totals[name] = sum(own.values())
        parts = []
        for op, key in PROFILED_OPS.items():
            seconds = sum(t for k, t in own.items() if (k == key if key.startswith("aten::") else key in k))
            if op in flops and seconds > 0:
                parts.append(f"{op} {flops[op] / 1e9:.0f} GFLOP in {seconds:.2f} s ({flops[op] / 1e9 / seconds:.0f} "
                             "GFLOP/s)")
        print(f"  profile {name:5s}: operator time {totals[name]:.2f} s per step; " + ", ".join(parts), flush=True)
    print(f"operator time ours/hallo = {totals['ours'] / totals['hallo']:.3f} (mean of {repeats} profiled steps)")


def print_flops(config: EMOConfig) -> None:
    hallo_step, ours_step = _meta_steps(config)
    with quiet():
        hallo, ours = _count(hallo_step), _count(ours_step)
    print(f"one guided step at {config.sample_size}², {config.frames_per_clip} frames + {config.motion_frames} "
          f"motion frames, batch 2, fp16 (meta tensors):")
    print(f"  Hallo's own network: {hallo / 1e12:.3f} TFLOPs")
    print(f"  ours:                {ours / 1e12:.3f} TFLOPs (ours/hallo = {ours / hallo:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="image size in pixels (multiple of 64)")
    parser.add_argument("--frames", type=int, default=4, help="frames per clip (motion frames stay 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each side")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32")
    parser.add_argument("--flops", action="store_true",
                        help="count FLOPs of one guided step of each at full size (512², 16+2 frames) and exit")
    parser.add_argument("--profile", action="store_true",
                        help="after the timed steps, profile two more of each side: operator time, and FLOPs, time "
                             "and GFLOP/s of the matrix products and convolutions")
    parser.add_argument("--whole-clip", action="store_true",
                        help="time whole clips instead: Hallo's pipeline at its default against ours per preset "
                             "(fp32; --size and --frames as above)")
    parser.add_argument("--presets", default=",".join(PRESETS), help="--whole-clip: ours, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="--whole-clip: timed runs of each side")
    parser.add_argument("--steps-run", type=int, help="--whole-clip: run this many steps per clip and scale the "
                                                      "denoising network's time to the clip's steps (default: all)")
    args = parser.parse_args()
    if args.flops:
        print_flops(hallo_config())
        return
    config = hallo_config().with_overrides(sample_size=args.size, frames_per_clip=args.frames)
    if args.whole_clip:
        compare_clips(config, args.presets.split(","), args.rounds, args.steps_run)
    else:
        compare(config, DTYPES[args.dtype], args.repeats, args.profile)


if __name__ == "__main__":
    main()
