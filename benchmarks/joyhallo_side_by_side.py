"""JoyHallo's own code and ours on the same random full-size weights: a short video of two clips (the second
continuing from the first one's last two frames) through JoyHallo's own clip loop and pipeline, and through
ours; the final latents of each clip and the decoded frames compared.

JoyHallo's network (imported at run time from a checkout of jdh-algo/JoyHallo named by JOYHALLO_PATH, never
copied here) is Hallo's with one shared audio attention per audio module; it is built as its
scripts/inference.py builds it (the SD1.5 UNet config, the denoising UNet with the `unet_additional_kwargs` of
its configs/inference/inference.yaml, the face locator and both projections: `hallo_side_by_side.py`'s
build_hallo_net on JoyHallo's classes), every floating parameter drawn at random (zero-initialised layers
included) and handed to our EMONet of the full-size `joyhallo` config (`load_state_dict(strict=True,
assign=True)`: one copy of the weights). A small random VAE (8x like SD's) is shared by both sides.

JoyHallo's loop is its scripts/inference.py `log_validation` (the clip loop, lines 337-398 at dbbe5b2), redone
here around its own FaceAnimatePipeline because the script around it builds a whole training setup
(accelerate, mlflow, 8-bit Adam, a training dataset): the portrait repeated as the first clip's motion
frames, the last two decoded frames (x2-1) as the next clip's, each clip's audio windows through its
audioproj, the same masks repeated over the clip, its inference.yaml's steps and cfg (40 and 3.5 by default;
`--steps` runs fewer), no motion_scale (as it passes none). Its script seeds nothing usable on the CPU
(`torch.cuda.manual_seed_all(42)` returns None, so its noise comes from the global RNG); here both sides get
a CPU generator seeded 42 (JoyHallo's pipeline draws each clip's noise from it in turn, as ours does).

Both sides get the same inputs: the portrait's pixels (random, in [-1, 1]), face-region mask, full/face/lip
masks (from one face box), face embedding, and wav2vec-shaped features [frames, 12, 768] (random: the front
end is compared on its own in tests/test_joyhallo.py; its windows of +-2 frames are JoyHallo's
process_audio_emb, clamped at the video's ends, made here as ours makes them). fp32 on the CPU.

    JOYHALLO_PATH=/path/to/JoyHallo PYTHONPATH=/path/to/einops python benchmarks/joyhallo_side_by_side.py \\
        [--size 64] [--steps 3] [--clips 2]

`--front-end` compares the audio features instead: JoyHallo's own front end (its AudioProcessor.preprocess, step 2,
without the vocal separator: librosa.load at 16 kHz, transformers' Wav2Vec2FeatureExtractor from the wav2vec2
folder, seq_len = ceil(seconds x 25), zeros to whole clips of 16 frames, its Wav2VecModel with every layer's
output stacked) against ours (PyAV, our resampler, our reader of the pretraining checkpoint, EMOPipeline.encode_audio)
on the same audio file (default: JoyHallo's examples/driving_audios/0.wav, 22.05 kHz), with a full-size
chinese-wav2vec2-base-shaped pretraining checkpoint of random weights written in its folder's layout (config.json,
preprocessor_config.json with do_normalize false, pytorch_model.bin with Wav2Vec2ForPreTraining's keys). JoyHallo's
Wav2VecModel needs the transformers it pins (4.39.2: today's collects hidden states differently), so its side runs
(benchmarks/joyhallo_front_end_reference.py, which imports nothing of ours) in a child process whose PYTHONPATH is JOYHALLO_REF_PYTHONPATH (e.g. a `pip install --target` folder with
transformers==4.39.2, tokenizers==0.15.2, huggingface_hub==0.23.5, soundfile and soxr); librosa itself needs numba,
which today's numpy does not run, so where it is missing its load is done as librosa 0.10.2 does it (soundfile read,
channels averaged, soxr's HQ resampler, the length fixed to ceil(n x 16000 / rate)). Two figures: ours given
JoyHallo's 16 kHz samples (the front end alone), and ours from the file (with our own decoder and resampler).

    JOYHALLO_PATH=... JOYHALLO_REF_PYTHONPATH=/path/to/pylib python benchmarks/joyhallo_side_by_side.py --front-end

`--flops` counts one guided step of JoyHallo's own network and of ours at full size on meta tensors (and of
Hallo's own network, with HALLO_PATH set to its checkout).

Measured on this project's CPU machine (2 cores, torch 2.13 CPU, fp32; JoyHallo at dbbe5b2):

  --size 64 --steps 3 --clips 2: final latents relative 5.4e-6 (clip 0) and 4.0e-6 (clip 1, continuing from
    clip 0's decoded frames); decoded frames max |diff| 1.5e-5 and 2.7e-5 (frames in 0..1)
  --front-end (0.wav, 16.86 s at 22.05 kHz, 422 frames padded to 432): given the same 16 kHz samples, relative
    5.2e-7 (every layer 2e-7 to 6e-7), also from a 16 kHz file read by each side's decoder; from the 22.05 kHz file
    0.34, all of it our resampler against soxr's (their samples differ by 1.6e-3 rms, all above 6 kHz: the two
    filters' transition bands, which random wav2vec2 weights weigh as much as speech; JoyHallo's own pipeline
    resamples with ffmpeg after the vocal separator, not with librosa)

Two shims, as in hallo_side_by_side.py: an empty xformers module (imported, never called) and diffusers 0.27's
gradient-checkpointing flag with the denoising UNet in training mode (JoyHallo's inference enables
checkpointing and never calls .eval(), so its blocks take the checkpointed path, which skips the 8x8 temporal
modules, as Hallo's does). Its ReferenceAttentionControl.update() rounds the reference features to fp16 by
default (a no-op in its fp16 inference); here they stay in fp32, as in Hallo's comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import sys
import time
import types
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import hallo_side_by_side as hs  # noqa: E402
from reference_common import quiet, relative  # noqa: E402

from emo_pipeline.config import EMOConfig, joyhallo_config  # noqa: E402

JOYHALLO_COMMIT = "dbbe5b2db754ff1e707bdde3fc41a23b585aea17"  # the commit this project's JoyHallo checks use
SEED = 42


def joyhallo_checkout() -> Path:
    """JOYHALLO_PATH, checked; exits with a one-line message if it is not a JoyHallo checkout."""
    path = os.environ.get("JOYHALLO_PATH")
    if not path:
        sys.exit("JOYHALLO_PATH is not set: set it to a checkout of jdh-algo/JoyHallo.")
    if not (Path(path) / "joyhallo" / "models" / "attention.py").is_file():
        sys.exit(f"JOYHALLO_PATH={path} is not a JoyHallo checkout (no joyhallo/models/attention.py in it).")
    return Path(path)


def import_joyhallo(path: Path) -> types.SimpleNamespace:
    """JoyHallo's model classes (Hallo's, under the package name joyhallo), from the checkout at `path`."""
    return hs.import_hallo(path, package="joyhallo")


def joyhallo_settings(path: Path) -> dict:
    """JoyHallo's configs/inference/inference.yaml (plain YAML: no interpolation in it)."""
    import yaml

    return yaml.safe_load((path / "configs" / "inference" / "inference.yaml").read_text())


def build_joyhallo_net(joy: types.SimpleNamespace, settings: dict, config: EMOConfig) -> nn.Module:
    """JoyHallo's `Net` (scripts/inference.py builds the same five modules as Hallo's, under the same names, and
    loads net.pth into it strictly)."""
    return hs.build_hallo_net(joy, settings, config)


def our_pipeline(joy_net: nn.Module, vae: nn.Module, config: EMOConfig):
    from emo_pipeline.audio.encoder import AudioEncoder
    from emo_pipeline.models import EMONet
    from emo_pipeline.pipeline import EMOPipeline
    from emo_pipeline.tiny import tiny_wav2vec

    with torch.device("meta"):
        net = EMONet(config)
    net.load_state_dict(joy_net.state_dict(), strict=True, assign=True)
    return EMOPipeline(net, vae, AudioEncoder(tiny_wav2vec()), device="cpu", dtype=torch.float32)


class LatentRecorder:
    """The latents JoyHallo's pipeline hands to its decode_latents, clip by clip."""

    def __init__(self, pipeline) -> None:
        self.latents: list[torch.Tensor] = []
        decode = pipeline.decode_latents

        def recording(latents):
            self.latents.append(latents.detach().clone())
            return decode(latents)

        pipeline.decode_latents = recording


def run_joyhallo(joy_net: nn.Module, vae: nn.Module, settings: dict, portrait, features: torch.Tensor,
                 steps: int, clip_length: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """scripts/inference.py's clip loop around JoyHallo's FaceAnimatePipeline: the frames [F, S, S, 3] in 0..1
    and the final latents [1, 4, F, h, w]."""
    from emo_pipeline.models.frame_windows import frame_windows

    face_animate = importlib.import_module("joyhallo.animate.face_animate")

    class ReferenceAttentionControl(face_animate.ReferenceAttentionControl):
        def update(self, writer, dtype=None):  # the features kept in the network's precision (see above)
            return super().update(writer, dtype=dtype or joy_net.denoising_unet.dtype)

    face_animate.ReferenceAttentionControl = ReferenceAttentionControl
    scheduler = hs.hallo_scheduler(settings)  # get_noise_scheduler's val scheduler: the same settings
    with quiet():
        pipeline = face_animate.FaceAnimatePipeline(
            vae=vae, reference_unet=joy_net.reference_unet, denoising_unet=joy_net.denoising_unet,
            face_locator=joy_net.face_locator, image_proj=joy_net.imageproj, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    recorder = LatentRecorder(pipeline)
    n_motion = settings["data"]["n_motion_frames"]
    size = portrait.pixels.shape[-1]
    generator = torch.Generator().manual_seed(SEED)
    audio_emb = frame_windows(features[None], 2)[0]  # process_audio_emb: frames i-2..i+2, clamped
    source_pixels = portrait.pixels[None]  # [1, 3, S, S] in [-1, 1]
    full = [m.full[None].repeat(clip_length, 1) for m in portrait.masks]
    face = [m.face[None].repeat(clip_length, 1) for m in portrait.masks]
    lip = [m.lip[None].repeat(clip_length, 1) for m in portrait.masks]
    tensor_result = []
    for t in range(audio_emb.shape[0] // clip_length):
        if not tensor_result:
            motion = source_pixels.repeat(n_motion, 1, 1, 1)
        else:
            motion = tensor_result[-1][0].permute(1, 0, 2, 3)[-n_motion:] * 2.0 - 1.0
        ref = torch.cat([source_pixels, motion])[None]
        audio_tensor = joy_net.audioproj(audio_emb[t * clip_length:(t + 1) * clip_length][None])
        with quiet(), contextlib.redirect_stderr(io.StringIO()):
            out = pipeline(ref_image=ref, audio_tensor=audio_tensor, face_emb=portrait.identity[None],
                           face_mask=portrait.face_region[None], pixel_values_full_mask=full,
                           pixel_values_face_mask=face, pixel_values_lip_mask=lip, width=size, height=size,
                           video_length=clip_length, num_inference_steps=steps,
                           guidance_scale=settings["cfg_scale"], generator=generator)
        tensor_result.append(out.videos)
    video = torch.cat(tensor_result, dim=2)[0].permute(1, 2, 3, 0)  # [F, S, S, 3]
    return video, torch.cat(recorder.latents, dim=2)


# ---------------------------------------------------------------------------- FLOPs
def print_flops(config: EMOConfig) -> None:
    """One guided step at full size (512², 16 + 2 frames, batch [uncond, cond], fp16) on meta tensors: JoyHallo's
    own network, ours of the joyhallo config and, with HALLO_PATH set, Hallo's own network (hallo_side_by_side.py)."""
    from emo_pipeline.cost import full_size_pipeline

    path = joyhallo_checkout()
    joy, settings = import_joyhallo(path), joyhallo_settings(path)
    dtype = torch.float16
    inputs = hs.make_inputs(config)
    portrait = hs.make_portrait(inputs).to("meta", dtype)
    inputs = inputs.to("meta", dtype)
    weights = [1.0, 1.0, 1.0]  # JoyHallo passes no motion_scale: the three branches summed as they are
    with quiet(), torch.no_grad():
        with torch.device("meta"):
            joy_net = build_joyhallo_net(joy, settings, config).to(dtype)
        joy_step = hs.hallo_guided_step(joy_net, joy, inputs, portrait, weights, config.guidance_scale)
        pipe = full_size_pipeline(config, device="meta", dtype=dtype)
        ours_step = hs.our_guided_step(pipe, inputs, portrait, weights, config.guidance_scale)
        ours_step()  # fills the clip's projection cache, as every step after a clip's first finds it
        theirs, ours = hs._count(joy_step), hs._count(ours_step)
    print(f"one guided step at {config.sample_size}², {config.frames_per_clip} frames + {config.motion_frames} motion "
          "frames, batch 2, fp16 (meta tensors):")
    print(f"  JoyHallo's own network: {theirs / 1e12:.3f} TFLOPs")
    print(f"  ours (joyhallo):        {ours / 1e12:.3f} TFLOPs (ours/JoyHallo's = {ours / theirs:.3f})")
    if os.environ.get("HALLO_PATH"):
        from emo_pipeline.config import hallo_config

        hallo = hs.hallo_step_flops(hallo_config().with_overrides(sample_size=config.sample_size))
        print(f"  Hallo's own network:    {hallo / 1e12:.3f} TFLOPs (JoyHallo's/Hallo's = {theirs / hallo:.3f})")


# ---------------------------------------------------------------------------- the audio front end
CLIP, FPS, RATE = 16, 25, 16000  # JoyHallo's clips, frame rate and wav2vec2 rate (joyhallo_front_end_reference.py)


def write_pretraining_folder(folder: Path, seed: int = 0) -> None:
    """chinese-wav2vec2-base's layout with random weights: wav2vec2-base's shape (transformers' Wav2Vec2Config
    defaults: 768 wide, 12 layers, group-normed convs without bias), Wav2Vec2ForPreTraining's keys, the positional
    conv's weight norm as weight_g / weight_v, do_normalize false."""
    import json

    from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

    from emo_pipeline.tiny import randomize_

    settings = {"model_type": "wav2vec2", "architectures": ["Wav2Vec2ForPreTraining"], "hidden_size": 768,
                "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "conv_bias": False,
                "feat_extract_norm": "group", "do_stable_layer_norm": False, "num_conv_pos_embeddings": 128,
                "num_conv_pos_embedding_groups": 16}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(settings))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": False, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
        "padding_side": "right", "padding_value": 0.0, "return_attention_mask": False, "sampling_rate": RATE}))
    torch.manual_seed(seed)
    model = randomize_(Wav2Vec2ForPreTraining(Wav2Vec2Config(**settings)).eval(), seed, scale=0.05)
    names = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    state = {}
    for key, value in model.state_dict().items():
        for new, old in names.items():
            key = key.replace(new, old)
        state[key] = value.detach().clone()
    torch.save(state, folder / "pytorch_model.bin")


def compare_front_ends(audio: Path) -> None:
    import subprocess
    import tempfile

    from emo_pipeline.audio.encoder import AudioEncoder
    from emo_pipeline.config import tiny_joyhallo_config
    from emo_pipeline.io.media import load_audio
    from emo_pipeline.pipeline import EMOPipeline
    from emo_pipeline.tiny import tiny_net, tiny_vae

    import wave

    from emo_pipeline.audio.resample import prepare_speech

    path = joyhallo_checkout()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (os.environ.get("JOYHALLO_REF_PYTHONPATH", ""), str(path)) if p))
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "chinese-wav2vec2-base"
        write_pretraining_folder(folder)
        encoder = AudioEncoder.from_pretrained(folder)

        def theirs_of(file: Path) -> dict:
            out = Path(work) / "reference.pt"
            subprocess.run([sys.executable, str(ROOT / "benchmarks" / "joyhallo_front_end_reference.py"), str(folder),
                            str(file), str(out)], env=env, check=True)
            return torch.load(out, weights_only=True)

        started = time.perf_counter()
        reference = theirs_of(audio)
        their_time = time.perf_counter() - started
        # the same sound as a 16 kHz 16-bit file (JoyHallo's resampled samples): no resampler on either side
        at_16k = Path(work) / "16k.wav"
        with wave.open(str(at_16k), "wb") as f:
            f.setnchannels(1), f.setsampwidth(2), f.setframerate(RATE)
            f.writeframes((reference["speech"].clamp(-1, 32767 / 32768) * 32768).round().to(torch.int16).numpy().tobytes())
        reference_16k = theirs_of(at_16k)
        read_16k = load_audio(at_16k)
    # our pipeline with a tiny network that takes wav2vec2-base's 12 × 768 features (only its front end runs)
    pipe = EMOPipeline(tiny_net(tiny_joyhallo_config(audio_feature_dim=768, audio_feature_layers=12)), tiny_vae(),
                       encoder)
    with torch.no_grad():
        waveform, rate = load_audio(audio)
        started = time.perf_counter()
        own = pipe.encode_audio(waveform, rate, clip_length=CLIP)
        our_time = time.perf_counter() - started
        runs = [("given JoyHallo's 16 kHz samples (the front end alone)", reference,
                 pipe.encode_audio(reference["speech"][None], RATE, clip_length=CLIP)),
                ("from the 16 kHz file (PyAV against soundfile, no resampling)", reference_16k,
                 pipe.encode_audio(*read_16k, clip_length=CLIP)),
                (f"from the {rate} Hz file (PyAV and our resampler against soundfile and soxr HQ)", reference, own)]
    print(f"audio {audio.name}: {waveform.shape[1] / rate:.2f} s at {rate} Hz; JoyHallo's front end with transformers "
          f"{reference['transformers']} ({their_time:.0f} s with its process), ours with transformers "
          f"{__import__('transformers').__version__} ({our_time:.1f} s); features {tuple(reference['features'].shape)} "
          f"({reference['length']} frames, padded to clips of {CLIP}); samples normalised: ours {encoder.normalize}")
    ours_16k = prepare_speech(waveform, rate, RATE)
    sample_diff = (ours_16k - reference["speech"]).abs()
    spectrum = torch.fft.rfft((ours_16k - reference["speech"]).double()).abs().square()
    high = torch.fft.rfftfreq(ours_16k.numel(), 1 / RATE) >= 6000
    print(f"  the 16 kHz samples, our resampler against soxr HQ: max |diff| {sample_diff.max():.3g}, rms "
          f"{sample_diff.square().mean().sqrt():.3g} (the signal's rms {reference['speech'].square().mean().sqrt():.3g}); "
          f"{spectrum[high].sum() / spectrum.sum():.4f} of the difference's energy lies above 6 kHz (the two filters' "
          "transition bands)")
    for label, theirs, ours in runs:
        theirs = theirs["features"]
        assert ours.features.shape == theirs.shape, label
        diff, rel = relative(ours.features, theirs)
        per_layer = [relative(ours.features[:, i], theirs[:, i])[1] for i in range(theirs.shape[1])]
        print(f"  ours {label}: max |diff| {diff:.3g}, relative {rel:.3g} (per layer {min(per_layer):.2g} to "
              f"{max(per_layer):.2g})")


def main() -> None:
    from echomimic_side_by_side import generate_recording_latents
    from emo_pipeline.audio.features import AudioFeatures
    from emo_pipeline.portrait import prepare_portrait
    from emo_pipeline.sampling.steps import SamplingOptions
    from emo_pipeline.tiny import tiny_vae

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64, help="portrait side in pixels (a multiple of 64)")
    parser.add_argument("--steps", type=int, default=3, help="DDIM steps per clip (JoyHallo's own: 40)")
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--front-end", nargs="?", const="", metavar="AUDIO",
                        help="compare the audio features instead (default audio: the checkout's "
                             "examples/driving_audios/0.wav)")
    parser.add_argument("--flops", action="store_true", help="count one guided step of JoyHallo's network, ours (and "
                                                              "Hallo's, with HALLO_PATH) at full size and exit")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.flops:
        return print_flops(joyhallo_config())
    if args.front_end is not None:
        return compare_front_ends(Path(args.front_end) if args.front_end else
                                  joyhallo_checkout() / "examples" / "driving_audios" / "0.wav")

    path = joyhallo_checkout()
    joy, settings = import_joyhallo(path), joyhallo_settings(path)
    config = joyhallo_config().with_overrides(sample_size=args.size)
    started = time.perf_counter()
    with quiet():
        joy_net = hs.randomize_(build_joyhallo_net(joy, settings, config))
    vae = tiny_vae(seed=3).eval()
    pipe = our_pipeline(joy_net, vae, config)
    print(f"built JoyHallo's network at full size with random weights ({sum(p.numel() for p in joy_net.parameters()) / 1e9:.3f} "
          f"B values), shared with ours ({time.perf_counter() - started:.0f} s)", flush=True)

    gen = torch.Generator().manual_seed(7)
    size, clip = args.size, settings["data"]["n_sample_frames"]
    frames = clip * args.clips
    image = torch.rand((size, size, 3), generator=gen)
    identity = torch.randn(512, generator=gen) * 20  # raw ArcFace embeddings are not normalised
    portrait = prepare_portrait(image, size, 512, size // 8, face_box=hs.FACE_BOX, identity=identity)
    features = torch.randn(frames, 12, 768, generator=gen)

    started = time.perf_counter()
    theirs, their_latents = run_joyhallo(joy_net, vae, settings, portrait, features, args.steps, clip)
    their_time = time.perf_counter() - started
    audio = AudioFeatures(speech=torch.zeros(frames * 640), features=features, num_frames=frames, fps=25.0,
                          clip_length=clip)
    options = SamplingOptions(seed=SEED, steps=args.steps)
    mine, my_latents, our_time = generate_recording_latents(pipe, portrait, audio, options)

    print(f"JoyHallo at {size}², {args.clips} clips of {clip} frames (+{config.motion_frames} motion frames), "
          f"{args.steps} DDIM steps, cfg {settings['cfg_scale']:g}; fp32, CPU, torch {torch.__version__}")
    for c in range(args.clips):
        part = slice(clip * c, clip * (c + 1))
        lat, lat_rel = relative(my_latents[:, :, part], their_latents[:, :, part])
        vid, vid_rel = relative(mine[part], theirs[part])
        print(f"clip {c}: final latents max |diff| {lat:.3g}, relative {lat_rel:.3g}; decoded frames max |diff| "
              f"{vid:.3g}, relative {vid_rel:.3g}")
    print(f"frames: ours {tuple(mine.shape)}, JoyHallo's {tuple(theirs.shape)}; wall time ours {our_time:.0f} s, "
          f"JoyHallo's {their_time:.0f} s")


if __name__ == "__main__":
    main()
