"""One config type describes a model: its architecture and its inference behaviour.

Where EMO as published and Hallo's trained behaviour differ, a field decides; the
presets below set them. The config is plain data so that it can be stored as JSON
(in a checkpoint's metadata) and read back.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .families import WHISPER_WINDOW_FRAMES, Family, family_of

# The SD1.5 UNet shape both UNets inherit. Only this config is needed, never SD1.5 weights.
SD15_BLOCK_OUT_CHANNELS = (320, 640, 1280, 1280)

# Hallo's DDIM settings (configs/inference/default.yaml). Inference uses *linear* betas.
HALLO_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "clip_sample": False,
    "steps_offset": 1,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
    "num_train_timesteps": 1000,
}

# V-Express's DDIM (inference_v2.yaml): Hallo's settings with scaled-linear betas, as it was trained.
VEXPRESS_SCHEDULER = dict(HALLO_SCHEDULER, beta_schedule="scaled_linear")

# The identity embedding Hallo, EMO and MEMO feed their identity projection: ArcFace (glintr100), 512 values.
ARCFACE_EMBEDDING_DIM = 512

# MEMO's rectified flow: diffusers' FlowMatchEulerDiscreteScheduler() defaults (inference.py).
FLOW_SCHEDULER = {"num_train_timesteps": 1000, "shift": 1.0}


@dataclass
class EMOConfig:
    name: str = "custom"
    family: str = "emo"  # see families.py: audio front end, conditioning route, sampling loop

    # --- UNets (ReferenceNet and Backbone share the SD1.5 layout) ---
    block_out_channels: tuple[int, ...] = SD15_BLOCK_OUT_CHANNELS
    layers_per_block: int = 2
    attention_heads: int = 8  # SD1.5's "attention_head_dim: 8" is really the head count
    cross_attention_dim: int = 768  # identity tokens feed attn2
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    latent_channels: int = 4
    # The Backbone's resnet and output GroupNorms: per frame (Hallo's inflated norm), or over all of a
    # clip's frames together (MEMO's diffusion_net when its config has use_inflated_groupnorm false).
    resnet_joint_frames: bool = False

    # --- temporal (AnimateDiff-style) modules ---
    temporal_heads: int = 8
    temporal_max_len: int = 32
    temporal_levels: tuple[int, ...] = (0, 1, 2, 3)  # down-block depths that get temporal modules
    temporal_mid_block: bool = True
    # Hallo never runs the temporal modules of the attention-free 8x8 blocks (its training-mode
    # code path skips them) although their weights exist. EMO runs temporal layers at every level.
    run_lowres_temporal: bool = False

    # --- audio ---
    audio_feature_layers: int = 12  # wav2vec hidden states stacked (hidden_states[1:])
    audio_feature_dim: int = 768
    audio_context: int = 2  # m: frames on each side (A(f-m) ... A(f+m))
    audio_tokens: int = 32  # per frame; whisper: window frames × layers, fed to attn2 as they are
    audio_proj_hidden: int = 512
    audio_attention_dim: int = 768
    audio_attention: str = "masked"  # "masked": Hallo's full/face/lip branches; "plain": one cross-attention
    audio_sample_rate: int = 16000
    # V-Express's Perceiver resampler (audio_framing "token_windows"): `audio_tokens` learned queries of
    # audio_attention_dim read each frame's window of wav2vec2 tokens, in `resampler_depth` layers
    resampler_depth: int = 4
    resampler_heads: int = 12
    resampler_dim_head: int = 64

    # --- identity and face region ---
    identity_dim: int = 512
    identity_tokens: int = 4  # 0: no identity projection (EchoMimic)
    face_locator_channels: tuple[int, ...] = (16, 32, 64, 128)

    # --- speed layers (EMO only; empty bucket list = no speed layers) ---
    speed_bucket_centers: tuple[float, ...] = ()
    speed_bucket_radii: tuple[float, ...] = ()
    speed_embed_dim: int = 0

    # --- inference behaviour ---
    sample_size: int = 512  # pixels, square
    fps: float = 25.0
    frames_per_clip: int = 16
    motion_frames: int = 2
    first_clip_motion: str = "reference"  # "reference": the portrait repeated (Hallo); "zeros": zero maps (EMO)
    motion_frame_mask_rate: float = 0.0  # Hallo2 drops this share of motion-frame pixels outside the face
    # Unconditional half of classifier-free guidance. Hallo drops reference attention, identity
    # and face region along with the audio; the audio is always dropped.
    uncond_drops_reference: bool = True
    uncond_drops_identity: bool = True
    uncond_drops_face_region: bool = True
    # Hallo tiles the batch rows' portrait features over the frames instead of repeating each
    # row's own (see Backbone.prepare_reference); exact Hallo outputs need the same.
    reference_tiles_batch: bool = True
    steps: int = 40
    guidance_scale: float = 3.5
    scheduler: dict[str, Any] = field(default_factory=lambda: dict(HALLO_SCHEDULER))
    vae_scaling_factor: float = 0.18215

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(self.block_out_channels)
        self.temporal_levels = tuple(self.temporal_levels)
        self.face_locator_channels = tuple(self.face_locator_channels)
        self.speed_bucket_centers = tuple(float(c) for c in self.speed_bucket_centers)
        self.speed_bucket_radii = tuple(float(r) for r in self.speed_bucket_radii)
        self.validate()

    # ------------------------------------------------------------------
    @property
    def spec(self) -> Family:
        """What this model's family does differently (families.py)."""
        return family_of(self.family)

    @property
    def has_speed_layers(self) -> bool:
        return len(self.speed_bucket_centers) > 0

    @property
    def uses_identity_embedding(self) -> bool:
        """Whether the portrait's ArcFace embedding reaches the network (Hallo, EMO, MEMO). EchoMimic has no
        identity tokens; the demo's take 16 values and were trained on a zero embedding only."""
        return self.identity_tokens > 0 and self.identity_dim == ARCFACE_EMBEDDING_DIM

    @property
    def audio_window(self) -> int:
        return 2 * self.audio_context + 1

    @property
    def vae_downscale(self) -> int:
        """Pixels per latent cell. The face locator's stride-2 convs must land on the VAE's latent
        grid, so its depth fixes the factor: 8 for SD's VAE (Hallo, EMO), 4 for the demo's."""
        return 2 ** (len(self.face_locator_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.sample_size // self.vae_downscale

    def validate(self) -> None:
        problems = []
        try:
            spec = self.spec
        except ValueError as err:
            problems.append(str(err))
            spec = None
        if spec is not None and spec.audio_encoder == "whisper":
            if self.audio_tokens != WHISPER_WINDOW_FRAMES * self.audio_feature_layers:
                problems.append(f"whisper features give {WHISPER_WINDOW_FRAMES} × {self.audio_feature_layers} = "
                                f"{WHISPER_WINDOW_FRAMES * self.audio_feature_layers} tokens per frame, not {self.audio_tokens}")
            if self.audio_attention_dim != self.audio_feature_dim:
                problems.append("with audio in the cross-attention, audio_attention_dim must equal audio_feature_dim")
        if spec is not None and spec.audio_framing == "token_windows" and self.audio_feature_layers != 1:
            problems.append("a resampler reads wav2vec2's last layer only: audio_feature_layers must be 1")
        if spec is not None and spec.noise == "flow" and "shift" not in self.scheduler:
            problems.append("a rectified-flow model's scheduler settings need a 'shift'")
        if spec is not None and spec.sampling == "context_windows" and self.motion_frames:
            problems.append(f"the {spec.title} family samples in context windows and has no motion frames")
        if self.audio_attention not in ("masked", "plain"):
            problems.append(f"audio_attention must be 'masked' or 'plain', not {self.audio_attention!r}")
        if self.first_clip_motion not in ("reference", "zeros"):
            problems.append(f"first_clip_motion must be 'reference' or 'zeros', not {self.first_clip_motion!r}")
        if self.frames_per_clip < 1:
            problems.append("frames_per_clip must be at least 1")
        if self.motion_frames < 0:
            problems.append("motion_frames must be 0 or more")
        joined = spec is None or spec.motion_route == "joined"  # MEMO's motion frames only feed the memory
        if (self.motion_frames if joined else 0) + self.frames_per_clip > self.temporal_max_len:
            problems.append(
                f"frames_per_clip + motion_frames = {self.frames_per_clip + self.motion_frames} exceeds the "
                f"temporal position encoding length {self.temporal_max_len}"
            )
        if self.sample_size % 64:
            problems.append(f"sample_size must be a multiple of 64, not {self.sample_size}")
        if not 0 <= self.motion_frame_mask_rate < 1:
            problems.append("motion_frame_mask_rate must be in [0, 1)")
        if len(self.speed_bucket_centers) != len(self.speed_bucket_radii):
            problems.append("speed_bucket_centers and speed_bucket_radii must have the same length")
        if self.has_speed_layers and self.speed_embed_dim <= 0:
            problems.append("speed layers need speed_embed_dim > 0")
        for c in self.block_out_channels:
            if c % self.norm_num_groups or c % self.attention_heads:
                problems.append(f"channel count {c} must divide by norm_num_groups and attention_heads")
        if problems:
            raise ValueError("Invalid EMO config: " + "; ".join(problems))

    def with_overrides(self, **changes: Any) -> "EMOConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EMOConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown EMO config fields: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "EMOConfig":
        return cls.from_dict(json.loads(text))


def hallo_config() -> EMOConfig:
    """Full-size Hallo/Hallo2 `net.pth`, with Hallo's exact inference behaviour."""
    return EMOConfig(name="hallo")


def hallo2_config() -> EMOConfig:
    """Hallo2 `net.pth`: Hallo's network and inference, plus Hallo2's long-video motion-frame masking."""
    return EMOConfig(name="hallo2", motion_frame_mask_rate=0.25)


def joyhallo_config() -> EMOConfig:
    """JoyHallo `net.pth` (jdh-algo/JoyHallo-v1): Hallo's network with one shared audio attention per audio
    module (its family's switch), fed by chinese-wav2vec2-base; Hallo's loop and sampling (its
    configs/inference/inference.yaml: 16-frame clips, 2 motion frames, 40 steps, cfg 3.5, 25 fps)."""
    return EMOConfig(name="joyhallo", family="joyhallo")


# EMO's speed buckets are not given in the paper (d is unspecified); these nine centres
# (radians per frame of head yaw change) are our choice, spaced for typical talking heads.
EMO_SPEED_CENTERS = (-0.08, -0.04, -0.02, -0.01, 0.0, 0.01, 0.02, 0.04, 0.08)
EMO_SPEED_RADII = (0.04, 0.02, 0.01, 0.005, 0.005, 0.005, 0.01, 0.02, 0.04)


# EMO's behaviour where it differs from Hallo's (shared by the full-size and tiny EMO presets).
EMO_BEHAVIOUR = dict(
    first_clip_motion="zeros",
    run_lowres_temporal=True,
    audio_attention="plain",
    uncond_drops_reference=False,
    uncond_drops_identity=False,
    uncond_drops_face_region=False,
    reference_tiles_batch=False,
)


def emo_config() -> EMOConfig:
    """EMO as published: 12-frame clips, 4 motion frames (zero maps for the first clip),
    temporal layers at every resolution, speed layers, audio-only guidance."""
    return EMOConfig(
        name="emo",
        frames_per_clip=12,
        motion_frames=4,
        speed_bucket_centers=EMO_SPEED_CENTERS,
        speed_bucket_radii=EMO_SPEED_RADII,
        speed_embed_dim=64,
        **EMO_BEHAVIOUR,
    )


def tiny_config(**overrides: Any) -> EMOConfig:
    """A few-hundred-kilobyte Hallo-shaped model for tests and CPU checks."""
    base = dict(
        name="tiny",
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        attention_heads=4,
        cross_attention_dim=32,
        norm_num_groups=8,
        temporal_heads=4,
        audio_feature_layers=2,
        audio_feature_dim=32,
        audio_tokens=4,
        audio_proj_hidden=32,
        audio_attention_dim=32,
        identity_dim=16,
        identity_tokens=2,
        face_locator_channels=(8, 16, 16, 16),
        sample_size=64,
        frames_per_clip=4,
        motion_frames=2,
        steps=3,
        guidance_scale=2.0,
    )
    base.update(overrides)
    return EMOConfig(**base)


def tiny_joyhallo_config(**overrides: Any) -> EMOConfig:
    """The tiny shape with JoyHallo's family: one audio attention shared by the masked branches."""
    base = dict(name="tiny-joyhallo", family="joyhallo")
    base.update(overrides)
    return tiny_config(**base)


def tiny_emo_config(**overrides: Any) -> EMOConfig:
    """The tiny shape with EMO's behaviour (speed layers, zero first motion frames)."""
    base = dict(
        name="tiny-emo",
        speed_bucket_centers=(-0.04, 0.0, 0.04),
        speed_bucket_radii=(0.02, 0.02, 0.02),
        speed_embed_dim=8,
        motion_frames=3,
        **EMO_BEHAVIOUR,
    )
    base.update(overrides)
    return tiny_config(**base)


def echomimic_config() -> EMOConfig:
    """EchoMimic v1 (denoising_unet.pth, reference_unet.pth, motion_module.pth, face_locator.pth) with
    its own inference settings (infer_audio2vid.py, configs/inference/inference_v2.yaml)."""
    return EMOConfig(
        name="echomimic",
        family="echomimic",
        audio_feature_layers=5,  # whisper-tiny: input embedding + 4 blocks
        audio_feature_dim=384,
        audio_tokens=50,  # 10 whisper frames × 5 layers
        audio_attention_dim=384,  # the Backbone's cross_attention_dim
        identity_tokens=0,
        face_locator_channels=(16, 32, 96, 256),
        run_lowres_temporal=True,  # its inference runs every motion module
        frames_per_clip=12,  # the context window
        motion_frames=0,
        uncond_drops_identity=False,
        reference_tiles_batch=False,
        fps=24.0,
        steps=30,
        guidance_scale=2.5,
    )


def echomimic_acc_config() -> EMOConfig:
    """EchoMimic's accelerated weights (denoising_unet_acc.pth, motion_module_acc.pth): the same network,
    sampled in 6 steps without guidance (infer_audio2vid_acc.py)."""
    return echomimic_config().with_overrides(name="echomimic-acc", steps=6, guidance_scale=1.0)


def tiny_echomimic_config(**overrides: Any) -> EMOConfig:
    """The tiny shape with EchoMimic's family: whisper tokens in attn2, context windows."""
    base = dict(
        name="tiny-echomimic",
        family="echomimic",
        audio_feature_layers=2,
        audio_feature_dim=16,
        audio_tokens=20,
        audio_attention_dim=16,
        identity_tokens=0,
        run_lowres_temporal=True,
        frames_per_clip=4,
        motion_frames=0,
        uncond_drops_identity=False,
        reference_tiles_batch=False,
        fps=24.0,
    )
    base.update(overrides)
    return tiny_config(**base)


def echomimic_v2_config() -> EMOConfig:
    """EchoMimic v2 (denoising_unet.pth, reference_unet.pth, motion_module.pth, pose_encoder.pth): v1's
    network at 768² with a 3-channel pose encoder, sampled as its infer.py does (30 steps, guidance 2.5,
    24 fps, windows of 12 overlapping by 3)."""
    return echomimic_config().with_overrides(name="echomimic-v2", family="echomimic_v2", sample_size=768)


def echomimic_v2_acc_config() -> EMOConfig:
    """EchoMimic v2's accelerated weights (denoising_unet_acc.pth, motion_module_acc.pth; the same reference
    UNet and pose encoder): 6 steps without guidance (infer_acc.py)."""
    return echomimic_v2_config().with_overrides(name="echomimic-v2-acc", steps=6, guidance_scale=1.0)


def tiny_echomimic_v2_config(**overrides: Any) -> EMOConfig:
    """The tiny shape with EchoMimic v2's family: per-frame pose features, windows shifted by 3."""
    base = dict(name="tiny-echomimic-v2", family="echomimic_v2")
    base.update(overrides)
    return tiny_echomimic_config(**base)


def vexpress_config() -> EMOConfig:
    """V-Express (tk93/V-Express: reference_net.bin, denoising_unet.bin, motion_module.bin, v_kps_guider.bin,
    audio_projection.bin) with its own inference settings (inference.py's defaults): 512², 30 fps, windows of 24
    frames overlapping by 4, 25 DDIM steps on scaled-linear betas, guidance 3.5 dropping every condition."""
    return EMOConfig(
        name="v-express",
        family="vexpress",
        audio_feature_layers=1,  # wav2vec2-base-960h's last_hidden_state
        audio_feature_dim=768,
        audio_tokens=5,  # the resampler's queries: each frame's cross-attention tokens
        audio_attention_dim=768,
        identity_tokens=0,
        face_locator_channels=(16, 32, 96, 256),  # its keypoint guider
        run_lowres_temporal=True,  # every motion module runs
        frames_per_clip=24,  # the context window
        motion_frames=0,
        uncond_drops_identity=False,
        reference_tiles_batch=False,
        fps=30.0,
        steps=25,
        guidance_scale=3.5,
        scheduler=dict(VEXPRESS_SCHEDULER),
    )


def tiny_vexpress_config(**overrides: Any) -> EMOConfig:
    """The tiny shape with V-Express's family: separate reference attention, resampled audio, keypoints."""
    base = dict(
        name="tiny-vexpress",
        family="vexpress",
        audio_feature_layers=1,
        audio_feature_dim=32,
        audio_tokens=3,
        audio_attention_dim=32,
        identity_tokens=0,
        run_lowres_temporal=True,
        frames_per_clip=6,  # windows overlap by 4 (the family's)
        motion_frames=0,
        uncond_drops_identity=False,
        reference_tiles_batch=False,
        fps=30.0,
        resampler_depth=2,
        resampler_heads=2,
        resampler_dim_head=8,
        scheduler=dict(VEXPRESS_SCHEDULER),
    )
    base.update(overrides)
    return tiny_config(**base)


def memo_config(resnet_joint_frames: bool = True) -> EMOConfig:
    """MEMO (memoavatar/memo: reference_net/, diffusion_net/, image_proj/, audio_proj/) with its own
    inference settings (configs/inference.yaml): 16-frame clips at 30 fps, 16 past frames in the
    temporal memory (the portrait for the first clip), 20 flow-matching Euler steps, guidance 3.5.
    `resnet_joint_frames` follows the diffusion_net's config.json (not use_inflated_groupnorm; its
    class default, false, when the key is absent)."""
    return EMOConfig(
        name="memo",
        family="memo",
        resnet_joint_frames=resnet_joint_frames,
        run_lowres_temporal=True,  # the 8×8 motion modules run, fed by the ReferenceNet's resnets
        fps=30.0,
        frames_per_clip=16,
        motion_frames=16,
        steps=20,
        guidance_scale=3.5,
        scheduler=dict(FLOW_SCHEDULER),
    )


def tiny_memo_config(**overrides: Any) -> EMOConfig:
    """The tiny shape with MEMO's family: joint audio modules, temporal memory, rectified flow."""
    base = dict(
        name="tiny-memo",
        family="memo",
        resnet_joint_frames=True,
        run_lowres_temporal=True,
        fps=30.0,
        frames_per_clip=4,
        motion_frames=4,
        scheduler=dict(FLOW_SCHEDULER),
    )
    base.update(overrides)
    return tiny_config(**base)


PRESETS = {
    "hallo": hallo_config,
    "hallo2": hallo2_config,
    "joyhallo": joyhallo_config,
    "tiny-joyhallo": tiny_joyhallo_config,
    "emo": emo_config,
    "tiny": tiny_config,
    "tiny-emo": tiny_emo_config,
    "echomimic": echomimic_config,
    "echomimic-acc": echomimic_acc_config,
    "tiny-echomimic": tiny_echomimic_config,
    "echomimic-v2": echomimic_v2_config,
    "echomimic-v2-acc": echomimic_v2_acc_config,
    "tiny-echomimic-v2": tiny_echomimic_v2_config,
    "v-express": vexpress_config,
    "tiny-vexpress": tiny_vexpress_config,
    "memo": memo_config,
    "tiny-memo": tiny_memo_config,
}


def preset(name: str) -> EMOConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
