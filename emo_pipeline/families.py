"""What differs between the public checkpoint families, decided in this one place.

All families share the engine's core: the ReferenceNet/Backbone UNets, the face locator, the
VAE, the schedulers, the guidance and the memory modes. A family fixes three things on top:

* the audio front end: wav2vec2 features interpolated to the frame rate (EMO, Hallo, Hallo2, MEMO: English
  wav2vec2-base-960h; JoyHallo: Mandarin chinese-wav2vec2-base, samples not normalised),
  or whisper-tiny encoder layers sliced around each frame (EchoMimic);
* the conditioning route: identity tokens in the spatial cross-attention plus separate audio
  attention modules (EMO/Hallo; JoyHallo's three masked branches share one attention), the same with MEMO's joint audio modules (the audio tokens are
  updated by each module and handed to the next, and an emotion label modulates their norms), or
  the audio tokens themselves in the spatial cross-attention (EchoMimic: no identity, no audio
  modules, a ReferenceNet without cross-attention; V-Express: the same with a Perceiver resampler's five tokens
  per frame, and the portrait read by a separate reference attention instead of joined to the self-attention);
* the sampling loop: clip after clip, each continuing from the last frames of the one before
  (motion frames, joined to each temporal module's frame sequence, or for MEMO kept in a decayed
  linear-attention memory of the whole past), or the whole video's latents at once in
  overlapping context windows whose predictions are averaged (EchoMimic v1 and v2; v2's face locator
  reads each frame's hand pose instead of a face mask; V-Express's reads three face keypoints drawn per frame,
  and its windows neither wrap nor shift); and the noise process:
  DDPM-style (v-prediction, DDIM) or rectified flow (MEMO: velocity, Euler).

A config names its family (`EMOConfig.family`); everything here is read through `family_of`.
"""

from __future__ import annotations

from dataclasses import dataclass

# EchoMimic's audio tokens for frame i: whisper frames int(i·50/fps) - 4 ... + 5 (audio2feature.py).
WHISPER_WINDOW_FRAMES = 10


@dataclass(frozen=True)
class Family:
    name: str
    title: str
    audio_encoder: str  # "wav2vec2" | "whisper"
    # "audio_modules": attn2 reads identity tokens, audio has its own attention modules;
    # "joint_audio": the same, with MEMO's joint audio modules and emotion labels;
    # "cross_attention": attn2 reads the frame's audio tokens, scaled by `cross_attention_scale`.
    audio_route: str
    cross_attention_scale: float
    reference_cross_attention: bool  # whether the ReferenceNet's blocks have attn2 (and its norm2) at all
    face_locator_in_channels: int  # 0: no face locator (MEMO)
    # the sampling loop (sampling/loops.py): "motion_frames" | "memory" (MEMO) | "context_windows" (EchoMimic)
    sampling: str
    # "joined": motion-frame features join each temporal module's sequence (Hallo, EMO);
    # "memory": they only feed a decayed memory of past frames (MEMO)
    motion_route: str = "joined"
    noise: str = "ddpm"  # "ddpm": the DDIM family of samplers; "flow": rectified flow (velocity, σ from 1 to 0)
    gpu_precision: str = "fp16"  # what the family's own code runs in on a GPU (MEMO: bf16)
    context_overlap: int = 0  # frames shared by neighbouring context windows
    context_shift: int = 0  # the windows move this many frames per step
    noise_clamp: float | None = None  # the initial noise is clamped to ±this before scaling
    face_fraction: float = 0.6  # share of the portrait crop the face box takes
    # what the face locator reads: "face_region" (the portrait's face-region mask, one map for the whole
    # video), "poses" (EchoMimic v2's pose encoder: each frame's hands drawn on black, per frame) or
    # "face_keypoints" (V-Express's keypoint guider: each frame's eyes and nose drawn on black)
    locator_input: str = "face_region"
    crops_to_face: bool = True  # False: the reference is the whole photo resized (EchoMimic v2's half body)
    # JoyHallo: Hallo's three masked audio branches (full, face, lip) read one shared cross-attention (attn2_0)
    shared_audio_attention: bool = False
    # the wav2vec2 the network was trained with (the names it is looked for by, io/model_files.py), and whether
    # its feature extractor normalises the samples (its preprocessor_config.json's do_normalize: what a single
    # weights file without that file beside it is read with)
    wav2vec_model: str = "wav2vec2-base-960h"
    wav2vec_normalize: bool = True
    # how wav2vec2 becomes each frame's audio: "layers" (every layer's state at the frame, around it: Hallo's
    # audio modules) or "token_windows" (V-Express: the last layer at two tokens a frame, frames i-2 … i+2, read by
    # a Perceiver resampler into the frame's cross-attention tokens; audio/token_windows.py)
    audio_framing: str = "layers"
    # how the Backbone reads the portrait: "joined" (the ReferenceNet's norm1 output appended to each self-attention's
    # keys and values: Hallo, EchoMimic, MEMO) or "separate" (V-Express: its norm2 output, read by a cross-attention
    # of its own, attn1_5, whose output is scaled by `reference_scale`)
    reference_route: str = "joined"
    reference_scale: float = 1.0
    context_wraps: bool = True  # the last context window wraps around to the first frames (EchoMimic)
    # V-Express smooths its decoded frames with a 3×3×3 median over time, rows and columns before saving
    median_filter: bool = False


FAMILIES: dict[str, Family] = {
    "emo": Family(
        name="emo", title="EMO / Hallo / Hallo2", audio_encoder="wav2vec2", audio_route="audio_modules",
        cross_attention_scale=1.0, reference_cross_attention=True,
        face_locator_in_channels=3, sampling="motion_frames",
    ),
    # JoyHallo (jdh-algo/JoyHallo): Hallo's network and loop with one cross-attention shared by the full, face
    # and lip branches of each audio module (attention.py: attn2_0 only), fed by chinese-wav2vec2-base (a
    # pretraining checkpoint whose feature extractor does not normalise the samples).
    "joyhallo": Family(
        name="joyhallo", title="JoyHallo", audio_encoder="wav2vec2", audio_route="audio_modules",
        cross_attention_scale=1.0, reference_cross_attention=True,
        face_locator_in_channels=3, sampling="motion_frames", shared_audio_attention=True,
        wav2vec_model="chinese-wav2vec2-base", wav2vec_normalize=False,
    ),
    # EchoMimic v1 (antgroup/echomimic): audio tokens in attn2 ×3 (mutual_self_attention.py,
    # audio_feature_ratio), whole-video context windows of 12 with overlap 3 shifted by 2 frames per
    # step (pipeline_echo_mimic.py), noise clamped to ±1.5 (prepare_latents), a one-channel face-box
    # mask, the reference cropped to the face box dilated by 0.5 on each side (infer_audio2vid.py).
    "echomimic": Family(
        name="echomimic", title="EchoMimic", audio_encoder="whisper", audio_route="cross_attention",
        cross_attention_scale=3.0, reference_cross_attention=False,
        face_locator_in_channels=1, sampling="context_windows", context_overlap=3, context_shift=2,
        noise_clamp=1.5, face_fraction=0.5,
    ),
    # EchoMimic v2 (antgroup/echomimic_v2): v1's network class for class; its face locator is a pose
    # encoder of each frame's hands drawn on black (pose_encoder.py: FaceLocator's body, 3 channels),
    # windows shifted by 3 frames per step (pipeline_echomimicv2.py), the whole half-body photo as the
    # reference (infer.py resizes it, no face crop).
    "echomimic_v2": Family(
        name="echomimic_v2", title="EchoMimic v2", audio_encoder="whisper", audio_route="cross_attention",
        cross_attention_scale=3.0, reference_cross_attention=False,
        face_locator_in_channels=3, sampling="context_windows", context_overlap=3, context_shift=3,
        noise_clamp=1.5, locator_input="poses", crops_to_face=False,
    ),
    # V-Express (tencent-ailab/V-Express, docs/v-express-inference.md): a separate reference cross-attention
    # (attn1_5, ×0.95) reading the ReferenceNet's norm2 outputs, whose own attn2 reads one zero token; wav2vec2's last
    # layer through a Perceiver resampler to 5 tokens a frame in attn2 (×3); three face keypoints drawn per frame
    # for its keypoint guider (the face locator's body, 3 channels); whole-video windows of 24 overlapping by 4,
    # neither wrapping nor shifting; no face crop; a 3×3×3 median filter on the frames.
    "vexpress": Family(
        name="vexpress", title="V-Express", audio_encoder="wav2vec2", audio_route="cross_attention",
        cross_attention_scale=3.0, reference_cross_attention=True,
        face_locator_in_channels=3, sampling="context_windows", context_overlap=4, context_shift=0,
        locator_input="face_keypoints", crops_to_face=False, audio_framing="token_windows",
        reference_route="separate", reference_scale=0.95, context_wraps=False, median_filter=True,
    ),
    # MEMO (memoavatar/memo): Hallo's UNets with joint, emotion-aware audio modules, memory-guided
    # temporal modules fed by the previous clip's 16 frames, no face locator, rectified flow.
    "memo": Family(
        name="memo", title="MEMO", audio_encoder="wav2vec2", audio_route="joint_audio",
        cross_attention_scale=1.0, reference_cross_attention=True,
        face_locator_in_channels=0, sampling="memory", motion_route="memory", noise="flow",
        gpu_precision="bf16",
    ),
}

# MEMO's emotion labels, in its classifier's order (emotion2vec+'s nine classes; MEMO's code does not
# name them, see docs/memo-inference.md). Label 9 is "none", used by guidance's unconditional row.
EMOTIONS = ("angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown")


def emotion_label(name: str) -> int:
    try:
        return EMOTIONS.index(name)
    except ValueError:
        raise ValueError(f"Unknown emotion {name!r}; choose one of {', '.join(EMOTIONS)}") from None


def family_of(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"Unknown model family {name!r}; choose one of {', '.join(FAMILIES)}") from None


AUTO_EMOTION = "auto"  # MEMO: each clip's emotion detected from the voice (emotion_input.py)
EMOTION_CHOICES = (AUTO_EMOTION, *EMOTIONS)


def parse_emotions(text: str, clips: int | None = None) -> "list[str] | str":
    """A label (or auto), or one per clip separated by commas or spaces (as a detection prints them) → the label or
    the list; each checked, and the list's length against `clips` when known."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        raise ValueError("No emotion given: write one of " + ", ".join(EMOTION_CHOICES) + ", or one per clip.")
    unknown = [p for p in parts if p not in EMOTION_CHOICES]
    if unknown:
        raise ValueError(f"Unknown emotion {unknown[0]!r}: choose from {', '.join(EMOTION_CHOICES)}.")
    if len(parts) == 1:
        return parts[0]
    if AUTO_EMOTION in parts:
        raise ValueError("'auto' stands for the whole video; a per-clip list names a label for each clip.")
    if clips is not None and len(parts) != clips:
        raise ValueError(f"{len(parts)} emotions were given for a video of {clips} clips: give one per clip (or one "
                         "for the whole video).")
    return parts
