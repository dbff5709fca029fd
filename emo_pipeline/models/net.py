"""EMONet: every trained part of the model under the names of Hallo's `net.pth`.

EchoMimic's four files map onto the same names (reference_unet., denoising_unet., face_locator.);
its family has no identity or audio projection (`imageproj`, `audioproj` are None). MEMO's four folders
map onto reference_unet., denoising_unet., imageproj. and audioproj.; it has no face locator. V-Express's five
files map onto reference_unet., denoising_unet., face_locator. (its keypoint guider) and audioproj. (its Perceiver
resampler, audio_projection.bin)."""

from __future__ import annotations

from torch import nn

from ..config import EMOConfig
from .audio_projection import AudioProjection
from .backbone import Backbone
from .face_locator import FaceLocator
from .identity_projection import IdentityProjection
from .perceiver_resampler import PerceiverResampler, PerceiverResamplerConfig
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
        if config.spec.audio_framing == "token_windows":  # V-Express: each frame's tokens through a resampler
            self.audioproj = PerceiverResampler(PerceiverResamplerConfig(
                dim=config.audio_attention_dim, depth=config.resampler_depth, dim_head=config.resampler_dim_head,
                heads=config.resampler_heads, num_queries=config.audio_tokens, embedding_dim=config.audio_feature_dim,
                output_dim=config.audio_attention_dim,
                max_seq_len=2 * config.audio_window))  # two tokens a frame (audio/token_windows.py)
        elif config.spec.audio_route in ("audio_modules", "joint_audio"):  # else the features are the tokens
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
