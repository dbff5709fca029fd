"""EchoMimic's own networks and sampling pipeline, as the reference side of a parity benchmark.

Nothing of EchoMimic is copied here: its code is imported at run time from a checkout of
antgroup/echomimic named by the ECHOMIMIC_PATH environment variable (or the `path` arguments),
written against commit a53e97040398ddae5d26df0d2054a8f1e9f9df6d. Its code needs `einops` and
`omegaconf` (pip install einops omegaconf); torchaudio, whisper, facenet and moviepy are not
needed (the audio encoder and the face detector are not used: the caller gives the whisper
tokens and the face mask).

    load_echomimic(path)             EchoMimic's classes, imported with the shims below
    build_networks(device, dtype, seed)  (reference_unet, denoising_unet, face_locator), full size,
                                     random weights (fixed seed), built as infer_audio2vid.py does
    state_dicts(ref, den, loc)       one flat dict, keys prefixed reference_unet./denoising_unet./
                                     face_locator. (the names our engine gives the parts)
    run_pipeline(nets, vae, ...)     EchoMimic's own Audio2VideoPipeline (or the _acc one) on given
                                     whisper tokens; returns the video and the final latents

Each of these takes a `version` (a `Version`: where a checkout keeps its modules, how its script
builds the conditioning encoder, its pipelines, its window shift), V1 by default: this file's
text describes v1; EchoMimic v2 (antgroup/echomimic_v2, V2, a pose encoder in place of the face
locator) is run through the same functions by benchmarks/echomimic_v2_reference.py.

    ECHOMIMIC_PATH=/path/to/echomimic PYTHONPATH=/path/to/einops+omegaconf \
        python benchmarks/echomimic_reference.py          # end-to-end smoke run, 64x64, 5 frames

Run-time shims (imports with today's diffusers, 0.42). They change nothing in the checkout: they
add names to already imported diffusers modules or register a module alias in sys.modules (and
EchoMimic's modules are imported without writing __pycache__ into the checkout).

* `diffusers.models.embeddings.PositionNet`: src/models/unet_2d_condition.py:23 imports it;
  diffusers renamed it GLIGENTextBoundingboxProjection. Aliased. Only built for
  attention_type="gated-text-image" (unet_2d_condition.py:665), which EchoMimic never uses.
* `diffusers.models.embeddings.CaptionProjection`: src/models/transformer_2d.py:7; renamed
  PixArtAlphaTextProjection. Aliased. Only built when caption_channels is given: never.
* `diffusers.models.dual_transformer_2d`: src/models/unet_2d_blocks.py:9; the module moved to
  diffusers.models.transformers.dual_transformer_2d. Registered under the old name in
  sys.modules. Only used with dual_cross_attention=True: never.
* No xformers stand-in is needed (unlike Hallo): motion_module.py:27 and transformer_3d.py:20
  import xformers only when diffusers reports it installed.
* Deprecation notices of today's diffusers (the `scale=` argument EchoMimic passes to resnets,
  samplers and feed-forwards, which diffusers now ignores (the LoRA scale is 1.0 anyway),
  LoRACompatibleConv/Linear) are silenced by `quiet()`; they change no result.

Run-time patches for running the pipeline off CUDA and for the reference run:

* ReferenceAttentionControl.register_reference_hooks (src/models/mutual_self_attention.py:52-64)
  has `device=torch.device("cuda")` as a default that its __init__ never overrides; the
  classifier-free-guidance row mask `uc_mask` is moved there (lines 78-91, 168-175), which fails
  without CUDA. `load_echomimic` wraps the method so that the default becomes the device of the
  UNet being hooked (the same device on a CUDA machine, the CPU here).
* ReferenceAttentionControl.update (mutual_self_attention.py:266, 303) casts the reference
  features to `dtype=torch.float16` by default, and the pipeline calls it without a dtype
  (pipeline_echo_mimic.py:477): in fp32 the reference features are rounded to fp16. That is
  EchoMimic's behaviour and kept by default (`reference_bank_dtype=torch.float16`);
  `run_pipeline(..., reference_bank_dtype=None)` keeps them in the network's dtype instead
  (patched for the duration of the call only).
* The audio guider: the pipeline calls `audio_guider.audio2feat(audio_path)` and
  `audio_guider.feature2chunks(feature_array=..., fps=...)` (pipeline_echo_mimic.py:395-397);
  a stand-in object returns a dummy for the first and the caller's [F, 50, 384] tokens for the
  second, so the pipeline runs on exactly those tokens.
* Final latents: the pipeline's `decode_latents` is wrapped on the instance to record its input
  (`interpolation_factor`=1 leaves the latents untouched, pipeline_echo_mimic.py:295,539-542),
  and `prepare_latents` to record the initial noise.

Building: infer_audio2vid.py reads both UNets' config from sd-image-variations-diffusers/unet;
here that folder is a temporary stand-in holding config.json (SD_IMAGE_VARIATIONS_UNET_CONFIG,
written out in reference_common.py, nothing downloaded) and an empty weights file. The denoising
UNet comes from EchoMimic's own `from_pretrained_2d(base, motion_module_path, subfolder="unet",
unet_additional_kwargs=...)` as the script calls it (it swaps in the 3-D block types, builds with
`from_config` and copies the base weights present: none here; the motion-module file named does
not exist, which it skips); the reference UNet is `from_config` of the same config.json (what
`from_pretrained` builds before reading weights). The weights are drawn afterwards in any case.

Modes: infer_audio2vid.py gets the reference UNet from `from_pretrained` (eval mode), the
denoising UNet from `from_config` inside from_pretrained_2d (training mode, never switched) and
builds the face locator directly (training mode); build_networks leaves them in the same modes.
No result depends on it: every dropout has p=0 and gradient checkpointing is never switched on.

What EchoMimic's sampling does (pipeline_echo_mimic.py unless named; a53e970):

1. Timesteps: DDIMScheduler(**noise_scheduler_kwargs of configs/inference/inference_v2.yaml):
   linear betas 0.00085..0.012, rescale_betas_zero_snr=True, v_prediction, timestep_spacing
   "trailing", steps_offset 1 (unused by "trailing"), clip_sample False, set_alpha_to_one
   default True; `set_timesteps(steps)` (line 375); eta=0.0 (line 349), so the generator is
   never used by the steps.
2. Initial noise (prepare_latents, lines 150-182): randn_tensor([1, 4, F, H/8, W/8], generator,
   dtype=the VAE's dtype; drawn on the generator's device, the CPU for infer_audio2vid.py's
   `torch.manual_seed(seed)`, then moved) then `torch.clamp(latents, -1.5, 1.5)` (line 180), times
   init_noise_sigma (1.0). F = min(video_length, number of whisper chunks) (line 404).
3. Face locator (lines 420-422): run once on the [1, 1, 1, H, W] mask in [0, 1] (a 0/255 mask /
   255 in infer_audio2vid.py), giving [1, 320, 1, h, w]; rows [zeros, features]; added after
   conv_in (unet_3d_echo.py:491-494), broadcast over the frames.
4. Reference: the portrait goes through VaeImageProcessor.preprocess (PIL lanczos resize to
   W x H when the size differs, scaled to [-1, 1]),
   `vae.encode(...).latent_dist.mean * 0.18215` (lines 427-434); the reference UNet runs ONCE, at
   the first step (t_i == 0), with timestep 0 and encoder_hidden_states=None (lines 470-477).
   In "write" mode every BasicTransformerBlock of it stores its norm1 output and skips the
   cross-attention (the reference UNet has no attn2/norm2, no conv_norm_out/conv_out at all);
   `update` pairs the 16 writer blocks with the 16 TemporalBasicTransformerBlocks of the
   denoising UNet by sorting both lists by width, descending, stable in module order
   (mutual_self_attention.py:284-305) -- this pairs blocks of the same name -- and duplicates the
   stored features for the [uncond, cond] rows, cast to fp16 (see above).
5. Context windows: computed ONCE, `uniform(0, steps, F, context_frames, context_stride=1,
   context_overlap)` (lines 439-449, context.py:15-42): if F <= context_frames a single window
   [0..F-1]; else windows starting at 0, s, 2s, ... < F with s = context_frames -
   context_overlap, each `context_frames` long and wrapping around modulo F (closed loop: the
   last window runs past the end back to frame 0). With the defaults 12/3 and F=30: starts 0, 9,
   18, 27, the last one [27, 28, 29, 0, ..., 8].
6. At step t_i every window index is shifted: (c + 2 * t_i) % F (lines 491-494), also in the
   single-window case, where it rotates the frame order the motion modules see (their
   positional encoding makes that matter); the predictions are scattered back to the frames
   they belong to. context_batch_size=1: one window per UNet call.
7. Per window (lines 496-514): the window's latents, repeated to rows [uncond, cond] (same
   latents), `scale_model_input` (identity for DDIM), the denoising UNet with the step's t,
   encoder_hidden_states=None, audio rows [zeros, tokens] of shape [2, n, 50, 384] (rearranged
   to one row of 50 tokens per frame, transformer_3d.py:117-126), face rows [zeros, features].
   The unconditional rows therefore drop the audio (zero tokens, still attended to: to_k/to_v
   have no bias, so attn2 gives just to_out.0's bias, times 3), the face
   locator (zero features), and the reference attention: in "read" mode each block computes
   attn1 with keys/values [own tokens ; reference tokens] for all rows, then overwrites the
   first half of the rows (uc_mask, [1]*B/2 + [0]*B/2) with plain self-attention
   (mutual_self_attention.py:144-186). Then attn2 on the audio tokens, its output scaled by
   audio_feature_ratio=3.0 (lines 104, 188-202), then the feed-forward; no temporal attention
   in that block (each motion module follows its spatial transformer in the 3-D blocks:
   resnet, transformer, motion module; unet_3d_blocks.py:445-459, mid block 277-294).
8. Accumulation (lines 516-525): predictions summed per frame and counted; with guidance
   (cfg > 1) `(noise_pred / counter).chunk(2)` -> uncond + cfg * (cond - uncond), i.e. the
   average over the windows covering a frame, then guidance. Without guidance (cfg <= 1) the
   standard pipeline does NOT divide by the count: frames in two windows get the SUM of the two
   predictions (pipeline_echo_mimic_acc.py:531-532 divides; the standard one does not).
9. `scheduler.step(noise_pred, t, latents, eta=0, generator)` on all F frames (line 527).
10. _acc pipeline (pipeline_echo_mimic_acc.py:517-519): each window's v-prediction goes to x0
    (origin_by_velocity_and_sample) and back to a "pseudo-velocity" with respect to timestep -1
    (alpha = 1) (src/utils/step_func.py): algebraically the identity (v -> v), so the only
    difference is float rounding (measured: 2e-7 relative on the fp32 smoke run, cfg 2.5);
    plus the division by the count without guidance. Its script defaults are 6 steps, cfg 1.0
    (infer_audio2vid_acc.py), with other weights.
11. Decoding (lines 115-127): latents / 0.18215, one frame at a time through vae.decode,
    (x / 2 + 0.5).clamp(0, 1), returned as a [1, 3, F, H, W] float32 tensor.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.util
import io
import json
import os
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

ECHOMIMIC_COMMIT = "a53e97040398ddae5d26df0d2054a8f1e9f9df6d"
WEIGHT_STD = 0.02

# The UNet config of lambdalabs/sd-image-variations-diffusers (unet/config.json), which
# infer_audio2vid.py reads for both UNets (configs/prompts/animation.yaml: pretrained_base_model_path):
# the Stable Diffusion 1.5 UNet layout (cross-attention width 768).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_common import SD15_UNET_CONFIG as SD_IMAGE_VARIATIONS_UNET_CONFIG, checkout_path, quiet  # noqa: E402

# What EchoUNet3DConditionModel.from_pretrained_2d (src/models/unet_3d_echo.py:611-625) changes
# in it before `from_config(unet_config, **unet_additional_kwargs)` (construct_networks calls
# from_pretrained_2d itself; this is named for the key list's header).
ECHO_3D_BLOCKS = {
    "_class_name": "EchoUNet3DConditionModel",
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
    "mid_block_type": "UNetMidBlock3DCrossAttn",
}
# infer_audio2vid.py: FaceLocator(320, conditioning_channels=1, block_out_channels=(16, 32, 96, 256))
FACE_LOCATOR_ARGS = dict(conditioning_embedding_channels=320, conditioning_channels=1,
                         block_out_channels=(16, 32, 96, 256))
NETWORK_NAMES = ("reference_unet", "denoising_unet", "face_locator")  # our engine's names of the parts


@dataclass(frozen=True, eq=False)  # eq=False: hashed by identity (an lru_cache key)
class Version:
    """What this harness needs to know of one EchoMimic repository: its checkout, its modules (under
    src.), how its inference script builds the conditioning encoder and calls its pipelines."""

    name: str
    repository: str
    commit: str
    variable: str  # the environment variable naming a checkout
    script: str  # the inference script whose build is followed
    unet_3d: tuple[str, str]  # (module, class) of the denoising UNet
    locator: tuple[str, str]  # (module, class) of the conditioning encoder (face locator, pose encoder)
    locator_args: tuple[tuple[str, object], ...]  # its constructor's keywords, as the script passes them
    locator_name: str  # its .pth file's name and the pipeline's keyword for it
    pipelines: tuple[str, str]  # the standard and the accelerated pipeline modules
    pipeline_class: str  # the pipeline class in both
    prepare_latents: str  # the pipeline method that draws the initial noise
    shift: int  # frames every window moves per step

    @property
    def marker(self) -> str:
        return f"src/{self.unet_3d[0].replace('.', '/')}.py"

    @property
    def network_names(self) -> tuple[str, str, str]:
        """The parts as the repository's files name them (its key lists use these)."""
        return ("reference_unet", "denoising_unet", self.locator_name)


V1 = Version(
    name="EchoMimic", repository="antgroup/echomimic", commit=ECHOMIMIC_COMMIT, variable="ECHOMIMIC_PATH",
    script="infer_audio2vid.py", unet_3d=("models.unet_3d_echo", "EchoUNet3DConditionModel"),
    locator=("models.face_locator", "FaceLocator"), locator_args=tuple(FACE_LOCATOR_ARGS.items()),
    locator_name="face_locator",
    pipelines=("pipelines.pipeline_echo_mimic", "pipelines.pipeline_echo_mimic_acc"),
    pipeline_class="Audio2VideoPipeline", prepare_latents="prepare_latents", shift=2,
)


# ---------------------------------------------------------------------------- import + shims
def echomimic_path(path: str | os.PathLike | None = None, version: Version = V1) -> Path:
    """`path`, else the version's variable (ECHOMIMIC_PATH for v1), checked to be a checkout of it."""
    return checkout_path(path, version.variable, version.marker, version.repository)


def _install_diffusers_shims() -> None:
    """The three import-time aliases of the module docstring (each only if missing)."""
    import diffusers.models.embeddings as embeddings

    if not hasattr(embeddings, "PositionNet"):
        embeddings.PositionNet = embeddings.GLIGENTextBoundingboxProjection
    if not hasattr(embeddings, "CaptionProjection"):
        embeddings.CaptionProjection = embeddings.PixArtAlphaTextProjection
    if importlib.util.find_spec("diffusers.models.dual_transformer_2d") is None \
            and "diffusers.models.dual_transformer_2d" not in sys.modules:
        sys.modules["diffusers.models.dual_transformer_2d"] = importlib.import_module(
            "diffusers.models.transformers.dual_transformer_2d")


def _patch_reference_control_device(control_class: type) -> None:
    """register_reference_hooks' `device` default becomes the hooked UNet's device (see above)."""
    original = control_class.register_reference_hooks
    if getattr(original, "_echomimic_reference_patch", False):
        return

    @functools.wraps(original)
    def register_reference_hooks(self, *args, **kwargs):
        if "device" not in kwargs and len(args) < 11:  # `device` is the 11th parameter after self
            kwargs["device"] = next(self.unet.parameters()).device
        return original(self, *args, **kwargs)

    register_reference_hooks._echomimic_reference_patch = True
    control_class.register_reference_hooks = register_reference_hooks


@functools.lru_cache(maxsize=None)
def _load(path: Path, version: Version) -> types.SimpleNamespace:
    for name in ("einops", "omegaconf"):
        if importlib.util.find_spec(name) is None:
            raise RuntimeError(f"EchoMimic's code needs {name}: pip install einops omegaconf")
    loaded = sys.modules.get("src")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve().parent != path / "src":
        raise RuntimeError(f"another package named 'src' is imported already ({loaded!r})")
    _install_diffusers_shims()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # leave the checkout as it is
    try:
        with quiet():
            module = lambda name: importlib.import_module(f"src.{name}")  # noqa: E731
            echo = types.SimpleNamespace(
                path=path,
                version=version,
                UNet2DConditionModel=module("models.unet_2d_condition").UNet2DConditionModel,
                UNet3D=getattr(module(version.unet_3d[0]), version.unet_3d[1]),
                Locator=getattr(module(version.locator[0]), version.locator[1]),
                ReferenceAttentionControl=module("models.mutual_self_attention").ReferenceAttentionControl,
                context=module("pipelines.context"),
                pipeline=module(version.pipelines[0]),
                pipeline_acc=module(version.pipelines[1]),
            )
    finally:
        sys.dont_write_bytecode = writes_bytecode
    _patch_reference_control_device(echo.ReferenceAttentionControl)
    return echo


def load_echomimic(path: str | os.PathLike | None = None, version: Version = V1) -> types.SimpleNamespace:
    """EchoMimic's classes and pipeline modules, imported from the checkout at `path` (default the
    version's variable, ECHOMIMIC_PATH for v1) with the shims and the device patch of the module
    docstring. One checkout per process: its package is `src`."""
    return _load(echomimic_path(path, version), version)


def inference_settings(echo: types.SimpleNamespace) -> dict:
    """configs/inference/inference_v2.yaml of the checkout, as plain containers."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(echo.path / "configs" / "inference" / "inference_v2.yaml"))


# ---------------------------------------------------------------------------- networks
@contextlib.contextmanager
def _base_model_folder() -> Iterator[Path]:
    """A temporary stand-in for pretrained_weights/sd-image-variations-diffusers as the scripts read it:
    unet/config.json (SD_IMAGE_VARIATIONS_UNET_CONFIG) and an empty unet/diffusion_pytorch_model.safetensors
    (from_pretrained_2d requires a weights file and copies the tensors it holds: none)."""
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory(prefix="echomimic-base-") as folder:
        unet = Path(folder) / "unet"
        unet.mkdir()
        (unet / "config.json").write_text(json.dumps(SD_IMAGE_VARIATIONS_UNET_CONFIG), encoding="utf-8")
        save_file({}, str(unet / "diffusion_pytorch_model.safetensors"))
        yield Path(folder)


def construct_networks(echo: types.SimpleNamespace) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The three networks as the version's inference script builds them (see "Building" in the module
    docstring), without loading weights, on the current default device (call it under
    `with torch.device("meta"):` for shapes only)."""
    settings = inference_settings(echo)
    version = echo.version
    with quiet(), _base_model_folder() as base:
        reference_unet = echo.UNet2DConditionModel.from_config(echo.UNet2DConditionModel.load_config(base / "unet"))
        denoising_unet = echo.UNet3D.from_pretrained_2d(
            base, base / "motion_module.pth (none: weights are drawn afterwards)", subfolder="unet",
            unet_additional_kwargs=settings["unet_additional_kwargs"])
        locator = echo.Locator(**dict(version.locator_args))
    reference_unet.eval()  # from_pretrained returns it in eval mode
    denoising_unet.train()  # from_config (inside from_pretrained_2d) leaves it in training mode
    locator.train()  # built directly
    return reference_unet, denoising_unet, locator


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Parameters are created on the meta device (no memory, no init cost), buffers as usual
    (so computed buffers such as the motion modules' sinusoidal pos_encoder.pe keep their values)."""
    original = nn.Module.register_parameter

    def register_parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    nn.Module.register_parameter = register_parameter
    try:
        yield
    finally:
        nn.Module.register_parameter = original


@torch.no_grad()
def _materialize_random_(net: nn.Module, generator: torch.Generator, device: torch.device,
                         dtype: torch.dtype, std: float) -> None:
    """Every parameter allocated on `device` in `dtype` and drawn at random: N(0, std^2), plus 1
    for the scales of GroupNorm/LayerNorm (InflatedGroupNorm is a GroupNorm); buffers moved."""
    scales = {id(m.weight) for m in net.modules()
              if isinstance(m, (nn.GroupNorm, nn.LayerNorm)) and getattr(m, "weight", None) is not None}
    done: dict[int, nn.Parameter] = {}
    for module in net.modules():
        for name, p in list(module._parameters.items()):
            if p is None:
                continue
            if id(p) not in done:
                noise = torch.randn(p.shape, generator=generator, dtype=torch.float32) * std
                if id(p) in scales:
                    noise += 1
                done[id(p)] = nn.Parameter(noise.to(device=device, dtype=dtype), requires_grad=False)
            module._parameters[name] = done[id(p)]
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = b.to(device=device, dtype=dtype if b.is_floating_point() else b.dtype)


def build_networks(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0,
                   path: str | os.PathLike | None = None, std: float = WEIGHT_STD, version: Version = V1,
                   ) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(reference_unet, denoising_unet, face_locator) at full size with random weights.

    Built as infer_audio2vid.py builds them (construct_networks), parameters first on meta, then
    allocated once on `device` in `dtype` and drawn from one CPU generator seeded with `seed`, in
    that order of networks and in module order: N(0, std^2) (fp32 draw, then cast), normalisation
    scales 1 + N(0, std^2). The zero-initialised layers (motion modules' proj_out, the face
    locator's conv_out) are thus non-zero. Buffers (motion modules' pos_encoder.pe) keep their
    computed values. Full fp32 size: about 3.3 + 5.2 GB."""
    echo = load_echomimic(path, version)
    device = torch.device(device)
    with _parameters_on_meta():
        nets = construct_networks(echo)
    generator = torch.Generator().manual_seed(seed)
    for net in nets:
        _materialize_random_(net, generator, device, dtype, std)
    return nets


def state_dicts(reference_unet: nn.Module, denoising_unet: nn.Module, face_locator: nn.Module,
                ) -> dict[str, torch.Tensor]:
    """One flat state dict, keys prefixed with the part's name (no copies: the tensors are the
    networks' own)."""
    flat: dict[str, torch.Tensor] = {}
    for name, net in zip(NETWORK_NAMES, (reference_unet, denoising_unet, face_locator)):
        flat.update({f"{name}.{key}": value for key, value in net.state_dict().items()})
    return flat


# ---------------------------------------------------------------------------- pipeline
class AudioGuiderStandIn:
    """What the pipeline asks of its audio guider (whisper in EchoMimic): `audio2feat` returns a
    dummy, `feature2chunks` returns the given [F, 50, 384] tokens."""

    def __init__(self, whisper_chunks: np.ndarray):
        self.whisper_chunks = np.asarray(whisper_chunks, dtype=np.float32)

    def audio2feat(self, audio_path):  # noqa: ARG002
        return np.zeros((0, 5, 384), dtype=np.float32)

    def feature2chunks(self, feature_array, fps):  # noqa: ARG002
        return self.whisper_chunks


@dataclass
class EchoMimicRun:
    video: torch.Tensor  # [1, 3, F, H, W] in [0, 1], float32 on the CPU (the pipeline's output)
    latents: torch.Tensor  # [1, 4, F, H/8, W/8]: the final latents, before decoding
    initial_latents: torch.Tensor  # [1, 4, F, H/8, W/8]: the clamped initial noise
    timesteps: torch.Tensor  # the scheduler's timesteps, in order
    windows: list[list[list[int]]]  # per step: the frame indices of each UNet call, in order
    seconds: float  # wall time of the pipeline call


def make_scheduler(echo: types.SimpleNamespace):
    """DDIMScheduler(**noise_scheduler_kwargs) of inference_v2.yaml, as infer_audio2vid.py."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**inference_settings(echo)["noise_scheduler_kwargs"])


def context_windows(echo: types.SimpleNamespace, video_length: int, steps: int, context_frames: int = 12,
                    context_overlap: int = 3, context_stride: int = 1) -> list[list[list[int]]]:
    """The frame indices of every UNet call, per step, as the pipeline computes them: its own
    context scheduler at step 0, then shifted by shift * t_i modulo the length (2 in v1, 3 in v2)."""
    queue = list(echo.context.get_context_scheduler("uniform")(
        0, steps, video_length, context_frames, context_stride, context_overlap))
    shift = echo.version.shift
    return [[[(c + t_i * shift) % video_length for c in window] for window in queue] for t_i in range(steps)]


@contextlib.contextmanager
def _reference_bank_dtype(echo: types.SimpleNamespace, dtype: torch.dtype | None) -> Iterator[None]:
    """ReferenceAttentionControl.update's default dtype (fp16 in EchoMimic) for one call."""
    if dtype == torch.float16:
        yield
        return
    control = echo.ReferenceAttentionControl
    original = control.update

    def update(self, writer, do_classifier_free_guidance=False, dtype=dtype):
        bank_dtype = dtype if dtype is not None else next(self.unet.parameters()).dtype
        return original(self, writer, do_classifier_free_guidance=do_classifier_free_guidance, dtype=bank_dtype)

    control.update = update
    try:
        yield
    finally:
        control.update = original


def run_pipeline(nets: tuple[nn.Module, nn.Module, nn.Module], vae: nn.Module, ref_image_pil,
                 whisper_chunks: np.ndarray, condition: torch.Tensor, width: int, height: int,
                 steps: int, cfg: float, generator: torch.Generator | None, context_frames: int = 12,
                 context_overlap: int = 3, fps: int = 24, acc: bool = False, video_length: int | None = None,
                 reference_bank_dtype: torch.dtype | None = torch.float16, path: str | os.PathLike | None = None,
                 verbose: bool = False, version: Version = V1) -> EchoMimicRun:
    """The version's own pipeline (v1: Audio2VideoPipeline; its _acc module's when `acc`), called as
    its inference script calls it, on the given whisper tokens [F, 50, 384] (F video frames at
    `fps`) and conditioning input, its third positional argument: v1's face mask ([1, 1, 1, H, W]
    or [H, W], values in [0, 1]), v2's poses_tensor ([1, 3, L, H, W] in [0, 1]); moved to the
    encoder's device and dtype. `video_length` defaults to F. Everything runs on the devices
    the networks and the VAE are on (keep them on one device). The pipeline's own prints (shapes)
    and its decoding progress bar are hidden unless `verbose`."""
    echo = load_echomimic(path, version)
    reference_unet, denoising_unet, locator = nets
    module = echo.pipeline_acc if acc else echo.pipeline
    chunks = np.asarray(whisper_chunks, dtype=np.float32)
    if chunks.ndim != 3 or chunks.shape[1:] != (50, 384):
        raise ValueError(f"whisper_chunks must be [F, 50, 384], got {chunks.shape}")
    if condition.ndim == 2:  # v1's mask as [H, W]
        condition = condition[None, None, None]
    locator_param = next(locator.parameters())
    condition = condition.to(device=locator_param.device, dtype=locator_param.dtype)

    with quiet():
        pipe = getattr(module, version.pipeline_class)(
            vae=vae, reference_unet=reference_unet, denoising_unet=denoising_unet,
            audio_guider=AudioGuiderStandIn(chunks), scheduler=make_scheduler(echo),
            **{version.locator_name: locator})
    pipe.set_progress_bar_config(disable=True)
    recorded: dict[str, torch.Tensor] = {}
    prepare_latents, decode_latents = getattr(pipe, version.prepare_latents), pipe.decode_latents

    def recording_prepare_latents(*args, **kwargs):
        recorded["initial"] = prepare_latents(*args, **kwargs)
        return recorded["initial"]

    def recording_decode_latents(latents):
        recorded["final"] = latents
        return decode_latents(latents)

    setattr(pipe, version.prepare_latents, recording_prepare_latents)
    pipe.decode_latents = recording_decode_latents

    length = len(chunks) if video_length is None else int(video_length)
    start = time.perf_counter()
    hide = contextlib.ExitStack()
    if not verbose:  # its prints (stdout) and the decoding's tqdm bar (stderr; not set_progress_bar_config's)
        hide.enter_context(contextlib.redirect_stdout(io.StringIO()))
        hide.enter_context(contextlib.redirect_stderr(io.StringIO()))
    with quiet(), hide, _reference_bank_dtype(echo, reference_bank_dtype):
        video = pipe(ref_image_pil, "<whisper tokens given>", condition, width, height, length, steps, cfg,
                     generator=generator, context_frames=context_frames, fps=fps,
                     context_overlap=context_overlap).videos
    seconds = time.perf_counter() - start
    frames = min(length, len(chunks))
    return EchoMimicRun(video=video, latents=recorded["final"], initial_latents=recorded["initial"],
                        timesteps=pipe.scheduler.timesteps.clone(),
                        windows=context_windows(echo, frames, steps, context_frames, context_overlap),
                        seconds=seconds)


# ---------------------------------------------------------------------------- smoke run
def tiny_vae(seed: int = 0):
    """A small random diffusers AutoencoderKL: 4 latent channels, 8x downscale (4 levels)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 16, 32, 32),
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         layers_per_block=1, norm_num_groups=8, sample_size=64).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cfg", type=float, default=2.5)
    parser.add_argument("--acc", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    from PIL import Image

    start = time.perf_counter()
    nets = build_networks(device=args.device, seed=0)
    print(f"networks built in {time.perf_counter() - start:.1f} s:",
          ", ".join(f"{n} {sum(p.numel() for p in net.parameters()) / 1e6:.1f}M"
                    for n, net in zip(NETWORK_NAMES, nets)))
    vae = tiny_vae().to(args.device)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
    chunks = rng.standard_normal((args.frames, 50, 384)).astype(np.float32)
    mask = torch.zeros(args.size, args.size)
    mask[args.size // 4: 3 * args.size // 4, args.size // 4: 3 * args.size // 4] = 1
    run = run_pipeline(nets, vae, image, chunks, mask, args.size, args.size, args.steps, args.cfg,
                       torch.Generator().manual_seed(0), acc=args.acc)
    print(f"video {tuple(run.video.shape)} {run.video.dtype}, latents {tuple(run.latents.shape)}, "
          f"initial latents {tuple(run.initial_latents.shape)} (|max| {run.initial_latents.abs().max():.3f})")
    print(f"timesteps {run.timesteps.tolist()}, windows per step {run.windows}")
    print(f"final latents: mean {run.latents.mean():.4f} std {run.latents.std():.4f}, finite "
          f"{bool(torch.isfinite(run.latents).all())}; pipeline wall time {run.seconds:.1f} s")


if __name__ == "__main__":
    main()
