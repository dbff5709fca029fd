"""EMONet: every trained part of the model under the names of Hallo's `net.pth`.

EchoMimic's four files map onto the same names (reference_unet., denoising_unet., face_locator.);
its family has no identity or audio projection (`imageproj`, `audioproj` are None). MEMO's four folders
map onto reference_unet., denoising_unet., imageproj. and audioproj.; it has no face locator."""

from __future__ import annotations

from torch import nn

from ..config import EMOConfig
from .audio_projection import AudioProjection
from .backbone import Backbone
from .face_locator import FaceLocator
from .identity_projection import IdentityProjection
from .reference_net import ReferenceNet
from .speed_encoder import SpeedEncoder


class EMONet(nn.Module):
    def __init__(self, config: EMOConfig) -> None:
        super().__init__()
        self.config = config
        self.reference_unet = ReferenceNet(config)
        self.denoising_unet = Backbone(config)
        self.face_locator = None  # MEMO has none
        if config.spec.face_locator_in_channels:
            self.face_locator = FaceLocator(config.block_out_channels[0], config.face_locator_channels,
                                            config.spec.face_locator_in_channels)
        self.imageproj = None
        if config.identity_tokens:
            self.imageproj = IdentityProjection(config.identity_dim, config.identity_tokens, config.cross_attention_dim)
        self.audioproj = None
        if config.spec.audio_route in ("audio_modules", "joint_audio"):  # else the features are the tokens
            self.audioproj = AudioProjection(
                window=config.audio_window,
                layers=config.audio_feature_layers,
                channels=config.audio_feature_dim,
                hidden=config.audio_proj_hidden,
                tokens=config.audio_tokens,
                out_dim=config.audio_attention_dim,
            )
        if config.has_speed_layers:
            self.speed_encoder = SpeedEncoder(
                config.speed_bucket_centers, config.speed_bucket_radii, config.audio_context, config.speed_embed_dim
            )
        else:
            self.speed_encoder = None
