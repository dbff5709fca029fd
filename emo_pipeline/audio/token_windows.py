"""wav2vec2's last layer at two tokens per video frame, and each frame's window of its neighbours' tokens
(V-Express's audio front end).

    hidden  = wav2vec2(speech).last_hidden_state          [T, 768], about 50 a second, the whole clip at once
    tokens  = linear interpolation of hidden to 2·F        [2F, 768] (align_corners False, in float32)
    frame i ← tokens 2i-4 … 2i+5 (frames i-2 … i+2, two tokens each), zero beyond either end    [10, 768]

V-Express pads the tokens with 4 zeros at each end and takes [2i, 2i + 10) of the padded sequence
(pipelines/v_express_pipeline.py:374-401); the same ten tokens are taken here by index, for any set of frames
at a time (a window of the sampler's), so the windows of the whole video never exist at once: AudioFeatures
keeps the [2F, 768] tokens. Each window then goes through the Perceiver resampler
(models/perceiver_resampler.py) to the frame's 5 cross-attention tokens.

F is our frame count, one video frame per audio frame (ceil(seconds · fps), audio/encoder.frame_count), so the
2F tokens span the whole audio. V-Express instead cuts the video to 24 + 20k frames and changes its fps to fit
(its inference.py); given its F, these functions give its windows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .encoder import frame_count
from .features import AudioFeatures

TOKENS_PER_FRAME = 2
CONTEXT_FRAMES = 2  # frames each side of a frame that its window reaches (V-Express's num_pad_audio_frames)


def window_length(per_frame: int = TOKENS_PER_FRAME, context: int = CONTEXT_FRAMES) -> int:
    """Tokens in one frame's window: 10 by default."""
    return per_frame * (2 * context + 1)


@torch.no_grad()
def last_layer(encoder, speech: torch.Tensor) -> torch.Tensor:
    """The last transformer layer's output (last_hidden_state) of a wav2vec2 AudioEncoder on 16 kHz speech
    already prepared for it (normalised, as its feature extractor does): [T, dim], float32, on the CPU."""
    model = encoder.model
    x = speech.to(encoder.device, encoder.dtype).reshape(1, -1)
    return model(x).last_hidden_state[0].float().cpu()


def spread_to_frames(hidden: torch.Tensor, num_frames: int, per_frame: int = TOKENS_PER_FRAME) -> torch.Tensor:
    """[T, dim] → [per_frame · num_frames, dim]: linear interpolation over the whole clip (align_corners False),
    computed in float32."""
    if hidden.ndim != 2 or hidden.shape[0] < 1:
        raise ValueError(f"audio states must be [steps, dim] with at least one step; got {tuple(hidden.shape)}")
    if num_frames < 1:
        raise ValueError(f"the video must have at least one frame; got {num_frames}")
    x = hidden.float().t().unsqueeze(0)  # [1, dim, T]
    return F.interpolate(x, size=per_frame * num_frames, mode="linear", align_corners=False)[0].t().contiguous()


def frame_windows(tokens: torch.Tensor, frames: int | torch.Tensor, per_frame: int = TOKENS_PER_FRAME,
                  context: int = CONTEXT_FRAMES) -> torch.Tensor:
    """Each frame's window of tokens: [per_frame · F, dim] → [n, per_frame · (2·context + 1), dim] for frames
    0..n-1 (an int n) or the given frame indices (a tensor). Frame i reads tokens per_frame·(i - context) …
    per_frame·(i + context + 1) - 1; those before the first or after the last token are zero."""
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [steps, dim]; got {tuple(tokens.shape)}")
    if isinstance(frames, int):
        frames = torch.arange(frames)
    frames = frames.to(tokens.device, torch.long).reshape(-1)
    offsets = torch.arange(window_length(per_frame, context), device=tokens.device) - per_frame * context
    index = per_frame * frames[:, None] + offsets[None]  # [n, window]
    inside = (index >= 0) & (index < tokens.shape[0])
    windows = tokens[index.clamp(0, max(tokens.shape[0] - 1, 0))]
    return windows * inside[..., None].to(windows.dtype)


def encode_token_windows(encoder, speech: torch.Tensor, fps: float, clip_length: int,
                         sample_rate: int = 16000) -> AudioFeatures:
    """The audio of one video as the sampling loop reads it: the whole clip's tokens at two a frame
    (`features` [2F, dim], float32 on the CPU; frame_windows takes each frame's ten). `speech`: 16 kHz, already
    prepared for the encoder (normalised)."""
    num_frames = frame_count(speech.numel(), sample_rate, fps)
    if num_frames < 1:
        raise ValueError("The audio is empty.")
    tokens = spread_to_frames(last_layer(encoder, speech), num_frames)
    return AudioFeatures(speech, tokens, num_frames, fps, clip_length)
