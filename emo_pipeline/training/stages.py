"""EMO's three training stages as one differentiable module.

- Stage 1 (image): ReferenceNet, Backbone (its spatial layers) and face locator, on single frames;
  the Backbone sees one frame, the ReferenceNet another frame of the same video.
- Stage 2 (video): temporal and audio modules (and the audio projection) on n + f frames, the
  first n being motion frames.
- Stage 3 (speed): only the temporal modules and the speed layers; audio layers stay frozen.
The loss is the diffusion loss of the config's scheduler (v-prediction for Hallo-shaped models).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn

from ..models import BackboneConditions, EMONet
from ..models.audio_attention import RegionMasks
from ..portrait import lip_box_from_face, region_masks

STAGES = (1, 2, 3)


def trainable_names(net: EMONet, stage: int) -> list[str]:
    """Parameter names each stage trains."""
    if stage not in STAGES:
        raise ValueError(f"Stage must be 1, 2 or 3, not {stage}.")
    cfg = net.config
    lowres = {f"denoising_unet.down_blocks.{len(cfg.block_out_channels) - 1}.", "denoising_unet.up_blocks.0."}
    names = []
    for name, _ in net.named_parameters():
        temporal = ".motion_modules." in name
        if temporal and not cfg.run_lowres_temporal and any(name.startswith(p) for p in lowres):
            continue  # never run, so never trained (Hallo leaves them at their initial values too)
        audio = ".audio_modules." in name or name.startswith("audioproj.")
        speed = name.startswith("speed_encoder.") or ".speed_" in name
        if stage == 1:
            chosen = not (temporal or audio or speed)
        elif stage == 2:
            chosen = (temporal and ".speed_" not in name) or audio
        else:
            chosen = temporal or speed
        if chosen:
            names.append(name)
    return names


class TrainingModule(nn.Module):
    """Computes one batch's diffusion loss; accelerate wraps this module (DDP sees its forward)."""

    def __init__(self, net: EMONet, vae: nn.Module, stage: int, uncond_audio_ratio: float = 0.05,
                 first_clip_ratio: float = 0.1) -> None:
        super().__init__()
        self.net, self.vae, self.stage = net, vae, stage
        self.uncond_audio_ratio = uncond_audio_ratio
        self.first_clip_ratio = first_clip_ratio
        self.scheduler = DDPMScheduler(**{k: v for k, v in net.config.scheduler.items() if k != "steps_offset"})
        vae.requires_grad_(False).eval()
        net.requires_grad_(False)
        chosen = set(trainable_names(net, stage))
        for name, param in net.named_parameters():
            param.requires_grad_(name in chosen)

    @staticmethod
    def _masks(boxes: torch.Tensor, frames: int, latent: int, dtype: torch.dtype) -> list[RegionMasks]:
        """Per-row background/face/lip masks [B*F, h*w] from each sample's face box."""
        per_item = [region_masks(tuple(box.tolist()), lip_box_from_face(tuple(box.tolist())), latent)
                    for box in boxes.cpu()]
        levels = []
        for level in range(len(per_item[0])):
            stack = {k: torch.stack([getattr(m[level], k) for m in per_item]).repeat_interleave(frames, dim=0)
                     .to(boxes.device, dtype) for k in ("full", "face", "lip")}
            levels.append(RegionMasks(**stack))
        return levels

    @torch.no_grad()
    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        dtype = next(self.vae.parameters()).dtype
        return self.vae.encode(pixels.to(dtype)).latent_dist.mean * self.net.config.vae_scaling_factor

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        net, cfg = self.net, self.net.config
        target = batch["target"]  # [B, F, 3, S, S]
        b, f = target.shape[:2]
        n = batch["motion"].shape[1]
        device = target.device
        x0 = self._encode(target.flatten(0, 1)).unflatten(0, (b, f)).transpose(1, 2)  # [B, 4, F, h, w]
        noise = torch.randn(x0.shape, generator=generator, device="cpu").to(device, x0.dtype)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=generator).to(device)
        noisy = self.scheduler.add_noise(x0, noise, t)
        if cfg.scheduler.get("prediction_type") == "v_prediction":
            goal = self.scheduler.get_velocity(x0, noise, t)
        else:
            goal = noise

        ref_pixels = torch.cat([batch["reference"][:, None], batch["motion"]], dim=1)  # [B, 1+n, 3, S, S]
        ref_latents = self._encode(ref_pixels.flatten(0, 1))
        identity = net.imageproj(torch.zeros(b, cfg.identity_dim, device=device, dtype=ref_latents.dtype))
        features = net.reference_unet(ref_latents, identity.repeat_interleave(1 + n, dim=0))
        if n > 0 and cfg.first_clip_motion == "zeros":
            # EMO starts a video with zero motion maps; this share of samples learns that first clip
            first = torch.rand(b, generator=generator) < self.first_clip_ratio
            keep = torch.ones(b, 1 + n)
            keep[first, 1:] = 0
            keep = keep.flatten().to(device, ref_latents.dtype).view(-1, 1, 1, 1)
            features = [x * keep for x in features]
        reference, motion = net.denoising_unet.prepare_reference(features, b, f, torch.ones(b, dtype=torch.bool,
                                                                                        device=device))
        if self.stage == 1:
            audio = torch.zeros(b, f, cfg.audio_tokens, cfg.audio_attention_dim, device=device, dtype=x0.dtype)
        else:
            audio = net.audioproj(batch["audio"].to(x0.dtype))
            keep = (torch.rand(b, generator=generator) >= self.uncond_audio_ratio).to(device)
            audio = audio * keep[:, None, None, None]  # audio dropout teaches the unconditional branch
        speed = None
        if net.speed_encoder is not None:
            speed = net.speed_encoder(batch["speed"].to(device))
        masks = self._masks(batch["face_box"], f, x0.shape[-1], x0.dtype) if cfg.audio_attention == "masked" else None
        cond = BackboneConditions(identity=identity, audio=audio, face_features=net.face_locator(batch["face_region"]),
                                  reference=reference, motion=motion, masks=masks, speed=speed)
        pred = net.denoising_unet(noisy, t, cond)
        return F.mse_loss(pred.float(), goal.float())
