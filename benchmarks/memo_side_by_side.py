"""MEMO's own code and ours on the same random full-size weights: one guided denoising forward, and a short
video of two clips (the second one continuing from the first through the temporal memory) through MEMO's own
clip loop and pipeline vs ours.

MEMO's networks are built from a checkout named by MEMO_PATH, as its inference.py builds them
(tests/make_memo_keys.py: imports at run time, never copied; the configs are written out there), every
parameter drawn at random (zero-initialised layers included). The temporal modules get MEMO's memory
processors, as its xformers switch installs them (MemoryLinearAttention.set_use_memory_efficient_attention_
xformers; the other attention layers keep diffusers' default processor, which computes what xformers
computes). Our EMONet of the full-size `memo` config takes the very same tensors (`load_state_dict(strict=True,
assign=True)`: one copy of the weights). Both sides get the same inputs: the portrait's pixels and face
embedding, wav2vec-shaped per-frame features (MEMO's 5-frame windows built here from them, clamped at the ends
as its audio_utils does; ours by the engine's own windowing), an emotion label, and the same seed (both draw
each clip's noise with torch.randn on a CPU generator seeded alike: MEMO's global generator, torch.manual_seed).
A small random VAE (8× like SD's) is shared.

    MEMO_PATH=/path/to/memo PYTHONPATH=/path/to/einops python benchmarks/memo_side_by_side.py
        [--size 64] [--steps 3] [--clips 2] [--inflated-groupnorm]

The guided prediction of every step (u + 3.5(c − u), read at the scheduler's step on both sides) and the
decoded frames are compared: max |ours - theirs| and max|ours - theirs| / max|theirs|. fp32 on the CPU.
`--inflated-groupnorm` builds MEMO's diffusion net with use_inflated_groupnorm true (per-frame resnet norms)
and ours with resnet_joint_frames false; the default is the class default, false, as make_memo_keys.py assumes.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from make_memo_keys import MEMO_DIFFUSION_NET_CONFIG, MEMO_REFERENCE_NET_CONFIG, load_memo  # noqa: E402
from reference_common import quiet, relative  # noqa: E402

from emo_pipeline.audio.encoder import AudioEncoder  # noqa: E402
from emo_pipeline.audio.features import AudioFeatures  # noqa: E402
from emo_pipeline.config import memo_config  # noqa: E402
from emo_pipeline.families import EMOTIONS  # noqa: E402
from emo_pipeline.io.loading import MEMO_PARTS  # noqa: E402
from emo_pipeline.models import EMONet  # noqa: E402
from emo_pipeline.pipeline import EMOPipeline  # noqa: E402
from emo_pipeline.portrait import Portrait, region_masks  # noqa: E402
from emo_pipeline.sampling.steps import SamplingOptions  # noqa: E402
from emo_pipeline.tiny import randomize_, tiny_vae, tiny_wav2vec  # noqa: E402


def build_memo(memo, inflated: bool):
    """reference_net, diffusion_net, image_proj, audio_proj with random weights, MEMO's memory processors."""
    torch.manual_seed(0)
    config = copy.deepcopy(MEMO_DIFFUSION_NET_CONFIG)
    config["use_inflated_groupnorm"] = inflated
    with quiet():
        nets = (memo.UNet2DConditionModel.from_config(copy.deepcopy(MEMO_REFERENCE_NET_CONFIG)),
                memo.UNet3DConditionModel.from_config(config), memo.ImageProjModel(), memo.AudioProjModel())
    # Its forward reads config.center_input_sample, which its __init__ does not take: the released config.json
    # must carry it (SD 1.5's false, the only value under which the pipeline's inputs make sense).
    nets[1].register_to_config(center_input_sample=False)
    for i, net in enumerate(nets):
        randomize_(net.eval().requires_grad_(False), seed=i + 1)  # proj_outs and the like start at zero
    for module in nets[1].modules():
        if hasattr(module, "set_use_memory_efficient_attention_xformers") and type(module).__name__ == \
                "MemoryLinearAttention":
            module.set_use_memory_efficient_attention_xformers(False)  # installs MemoryLinearAttnProcessor
    return nets


def our_pipeline(nets, vae, inflated: bool) -> EMOPipeline:
    with torch.device("meta"):
        net = EMONet(memo_config(resnet_joint_frames=not inflated))
    state = {prefix + k: v for (prefix, _), part in zip(MEMO_PARTS, nets) for k, v in part.state_dict().items()}
    net.load_state_dict(state, strict=True, assign=True)
    return EMOPipeline(net, vae, AudioEncoder(tiny_wav2vec()), device="cpu", dtype=torch.float32)


def windows(features: torch.Tensor, margin: int = 2) -> torch.Tensor:
    """[F, 12, 768] → [F, 5, 12, 768]: frames i-2..i+2, clamped at the ends (MEMO's audio_utils)."""
    index = (torch.arange(features.shape[0])[:, None] + torch.arange(-margin, margin + 1)).clamp(0, features.shape[0] - 1)
    return features[index]


class StepRecorder:
    """Records the prediction every scheduler step is given (the guided one on both sides)."""

    def __init__(self) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        self.cls, self.original, self.preds = FlowMatchEulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler.step, []

    def __enter__(self) -> "StepRecorder":
        original, preds = self.original, self.preds

        def step(scheduler, model_output, *args, **kwargs):
            preds.append(model_output.detach().clone())
            return original(scheduler, model_output, *args, **kwargs)

        self.cls.step = step
        return self

    def __exit__(self, *exc) -> None:
        self.cls.step = self.original


def run_memo(memo, nets, vae, pixels, face, features, label, steps, seed, frames_per_clip=16):
    """inference.py's clip loop (lines 188-240) around MEMO's VideoPipeline."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from memo.pipelines.video_pipeline import VideoPipeline

    reference_net, diffusion_net, image_proj, audio_proj = nets
    with quiet():
        pipeline = VideoPipeline(vae=vae, reference_net=reference_net, diffusion_net=diffusion_net,
                                 scheduler=FlowMatchEulerDiscreteScheduler(), image_proj=image_proj)
    generator = torch.manual_seed(seed)
    audio_emb = windows(features)
    emotion = torch.full((audio_emb.shape[0],), label)
    video = []
    for t in range(audio_emb.shape[0] // frames_per_clip):
        if not video:
            past = pixels.repeat(16, 1, 1, 1)
        else:
            past = video[-1][0].permute(1, 0, 2, 3)[-16:] * 2.0 - 1.0
        ref = torch.cat([pixels, past])[None]
        clip = slice(t * frames_per_clip, (t + 1) * frames_per_clip)
        audio_tensor = audio_proj(audio_emb[clip][None])
        with quiet():
            out = pipeline(ref_image=ref, audio_tensor=audio_tensor, audio_emotion=emotion[clip],
                           emotion_class_num=len(EMOTIONS), face_emb=face[None], width=pixels.shape[-1],
                           height=pixels.shape[-2], video_length=frames_per_clip, num_inference_steps=steps,
                           guidance_scale=3.5, generator=generator, is_new_audio=t == 0)
        video.append(out.videos)
    return torch.cat(video, dim=2)[0].permute(1, 2, 3, 0)  # F, H, W, 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64, help="portrait side in pixels (a multiple of 64)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--emotion", default="happy", choices=EMOTIONS)
    parser.add_argument("--inflated-groupnorm", action="store_true")
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    memo = load_memo()
    started = time.perf_counter()
    nets = build_memo(memo, args.inflated_groupnorm)
    vae = tiny_vae(seed=3).eval()
    ours = our_pipeline(nets, vae, args.inflated_groupnorm)
    print(f"built MEMO's networks at full size with random weights, shared with ours ({time.perf_counter() - started:.0f} s)")

    gen = torch.Generator().manual_seed(7)
    size, frames = args.size, 16 * args.clips
    pixels = torch.rand(1, 3, size, size, generator=gen) * 2 - 1
    face = torch.randn(512, generator=gen) * 20  # raw arcface embeddings are not normalised
    features = torch.randn(frames, 12, 768, generator=gen)
    label = EMOTIONS.index(args.emotion)

    with StepRecorder() as theirs_steps:
        started = time.perf_counter()
        theirs = run_memo(memo, nets, vae, pixels, face, features, label, args.steps, seed=42)
        their_time = time.perf_counter() - started
    portrait = Portrait(pixels=pixels[0], face_region=torch.zeros(3, size, size), identity=face,
                        masks=region_masks((0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, 1.0), size // 8),
                        face_box=(0.0, 0.0, 1.0, 1.0))
    audio = AudioFeatures(speech=torch.zeros(frames * 16000 // 30), features=features, num_frames=frames,
                          fps=30.0, clip_length=16)
    ours.profile = True
    with StepRecorder() as our_steps:
        started = time.perf_counter()
        mine = ours.generate(portrait, audio, SamplingOptions(seed=42, steps=args.steps, emotion=args.emotion))
        our_time = time.perf_counter() - started

    print(f"MEMO at {size}², {args.clips} clips of 16 frames, {args.steps} flow-matching Euler steps, cfg 3.5, "
          f"emotion {args.emotion}, use_inflated_groupnorm {args.inflated_groupnorm}; fp32, CPU")
    diff, rel = relative(our_steps.preds[0], theirs_steps.preds[0])
    print(f"one guided forward (clip 0, step 0): max abs diff {diff:.3g}, relative {rel:.3g}")
    worst = max(relative(a, b)[1] for a, b in zip(our_steps.preds, theirs_steps.preds))
    print(f"guided predictions of all {len(theirs_steps.preds)} steps: worst relative {worst:.3g}")
    for c in range(args.clips):
        part = slice(16 * c, 16 * (c + 1))
        diff, rel = relative(mine[part], theirs[part])
        print(f"decoded frames of clip {c}: max abs diff {diff:.3g}, relative {rel:.3g}")
    print(f"frames: ours {tuple(mine.shape)}, MEMO's {tuple(theirs.shape)}; wall time ours {our_time:.0f} s, "
          f"MEMO's {their_time:.0f} s (ours by stage: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in ours.timings.items()) + ")")


if __name__ == "__main__":
    main()
