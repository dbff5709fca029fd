"""The bundled demo model: the tiny EMO configuration trained with our own code, on the synthetic
talking-face set, small enough to ship and to train on a laptop CPU.

    python -m emo_pipeline train-demo --out models/demo --minutes 55

It writes the set, trains a tiny VAE on its frames (stage 0), then EMO's stages 1-3, and saves
`net.safetensors` (fp16), `vae/` and `wav2vec/` (a small random, frozen audio encoder) to `--out`,
then measures lip sync on held-out clips. Everything follows from `--seed`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..config import tiny_emo_config
from ..io.loading import load_net, save_net
from ..io.safe_files import write_atomic
from ..tiny import tiny_wav2vec
from .synthetic import head_motion, make_dataset, mouth_opening
from .trainer import TrainSettings, train


HELD_OUT_CLIPS = 4  # from seed + 1: lip sync is measured on the first two, head motion on all


def demo_config(**overrides):
    """tiny-emo on a 16x16 latent grid (a 4x VAE at 64 px, so a mouth spans a few latent cells),
    with the inference settings the demo is run with."""
    return tiny_emo_config(name="demo", face_locator_channels=(8, 16, 16), steps=10, guidance_scale=2.0,
                           **overrides)


def demo_vae():
    """The demo's VAE: SD's AutoencoderKL layout with 4 latent channels, slimmed, and 4x down (three
    blocks) instead of 8x: at 64 px an 8x grid puts a whole mouth in one latent cell."""
    from diffusers import AutoencoderKL

    blocks = demo_config().vae_downscale.bit_length()  # one block per halving, plus one
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
                         block_out_channels=(16, 32, 64, 64)[:blocks],
                         layers_per_block=1, norm_num_groups=8, sample_size=64)


def train_vae(frames: torch.Tensor, out: Path, seconds: float, seed: int, log=print) -> int:
    """Stage 0: the demo VAE on the set's frames, for `seconds`. The pipeline encodes to the
    posterior mean, so the decoder is trained on the mean (with light noise, as a cushion for the
    diffusion model's errors): sampling at the initial unit variance would drown the latents and
    slows training several-fold. Returns the number of steps taken."""
    torch.manual_seed(seed)
    vae = demo_vae().train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    start, step = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - start) < seconds:
        step += 1
        for group in optimizer.param_groups:  # linear decay over the time budget: sharp details come late
            group["lr"] = 2e-3 * max(0.02, 1 - elapsed / seconds)
        batch = frames[torch.randint(len(frames), (8,), generator=gen)].permute(0, 3, 1, 2).float() / 127.5 - 1
        latents = vae.encode(batch).latent_dist.mean
        noisy = latents + 0.05 * latents.detach().std() * torch.randn(latents.shape, generator=gen)
        error = vae.decode(noisy).sample - batch
        loss = error.abs().mean() + error.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 200 == 0:
            log(f"vae step {step} loss {loss.item():.4f}")
    vae.eval().save_pretrained(out)
    return step


@torch.no_grad()
def latent_scale(vae_dir: Path, frames: torch.Tensor, seed: int) -> float:
    """The scaling factor that gives the VAE's latents of these frames unit variance (SD's 0.18215
    was found the same way for its VAE)."""
    from ..vae import load_vae

    gen = torch.Generator().manual_seed(seed)
    sample = frames[torch.randperm(len(frames), generator=gen)[:256]].permute(0, 3, 1, 2).float() / 127.5 - 1
    return round(float(1 / load_vae(vae_dir).encode(sample).latent_dist.mean.std()), 5)


def _frames(folder: Path, size: int) -> torch.Tensor:
    from .dataset import VIDEO_SUFFIXES, read_frames

    return torch.cat([read_frames(p, size)[0] for p in sorted(folder.iterdir()) if p.suffix in VIDEO_SUFFIXES])


def generate_held_out(pipe, clip: Path, seed: int, shuffle: bool = False, head_speed: float | None = None,
                      **options):
    """A held-out clip's video from its first frame and its audio; `options` go to SamplingOptions."""
    from ..io.media import load_audio
    from ..sampling.steps import SamplingOptions
    from .dataset import read_frames

    meta = json.loads(clip.with_suffix(".json").read_text())
    frames, _ = read_frames(clip, pipe.config.sample_size)
    waveform, rate = load_audio(clip)
    audio = pipe.encode_audio(waveform, rate)
    if shuffle:  # the same sound in 0.2-s pieces in a random order: no longer tied to the mouth
        gen = torch.Generator().manual_seed(seed)
        pieces = list(audio.features.split(5))
        order = torch.randperm(len(pieces), generator=gen).tolist()
        audio.features = torch.cat([pieces[i] for i in order])
    portrait = pipe.prepare_portrait(frames[0].float() / 255, face_box=tuple(meta["face_box"]))
    video = pipe.generate(portrait, audio, SamplingOptions(seed=seed, head_speed=head_speed, **options))
    return video, meta, frames


def evaluate(model_dir: Path, clips: list[Path], seed: int = 0, lip_sync_clips: int = 2) -> dict:
    """Lip sync on the first clips (Pearson r of the measured mouth opening against the loudness
    labels, and the same with shuffled audio), identity colour drift, and head motion on every clip
    at two requested speeds."""
    from ..components import load_pipeline

    pipe = load_pipeline(model_dir / "net.safetensors")
    still = {}  # the unshuffled runs at speed 0 serve lip sync and head motion alike

    def generate(clip: Path, s: int, shuffle: bool = False, speed: float = 0.0):
        if shuffle or speed:
            return generate_held_out(pipe, clip, s, shuffle, speed)
        if (clip, s) not in still:
            still[clip, s] = generate_held_out(pipe, clip, s, head_speed=0.0)
        return still[clip, s]

    report = {}
    for shuffle in (False, True):
        measured, labels = [], []
        for clip in clips[:lip_sync_clips]:
            video, meta, _ = generate(clip, seed, shuffle)
            measured.append(mouth_opening(video, meta["face_box"]).numpy())
            labels.append(np.array(meta["mouth_open"][: len(video)]))
        m, lab = np.concatenate(measured), np.concatenate(labels)
        report["lip_sync_r_shuffled_audio" if shuffle else "lip_sync_r"] = round(float(np.corrcoef(m, lab)[0, 1]), 3)
        report["frames"] = len(m)
    video, meta, frames = generate(clips[0], seed)
    x0, y0, x1, y1 = (round(v * frames.shape[1]) for v in meta["face_box"])
    reference = frames[0, y0:y1, x0:x1].float().mean((0, 1)) / 255
    drift = (video[:, y0:y1, x0:x1].mean((1, 2)) - reference).abs().max()
    report["face_colour_max_drift"] = round(float(drift), 3)
    report.update(head_motion_by_speed(generate, clips, (seed, seed + 1, seed + 2)))
    return report


def head_motion_by_speed(generate, clips: list[Path], seeds: tuple[int, ...], speeds=(0.0, 0.05)) -> dict:
    """Head motion (px per frame) of every clip and seed at each requested speed; `generate(clip,
    seed, speed=...)` makes a held-out video. The same seed at both speeds starts from the same
    noise, so each (clip, seed) pair isolates the speed's effect."""
    report = {}
    for speed in speeds:
        motion = []
        for clip in clips:
            for s in seeds:
                video, meta, _ = generate(clip, s, speed=speed)
                motion.append(round(head_motion(video, meta["face_box"]), 3))
        report[f"head_motion_px_per_frame_at_speed_{speed}"] = motion
    report["head_motion_pairs"] = "clip-major, seeds " + ", ".join(map(str, seeds))
    return report


def train_demo(out: str | Path, minutes: float = 55.0, seed: int = 0, clips: int = 48, log=print) -> dict:
    out = Path(out)
    work = out.parent / f".{out.name}-training"
    data, held_out = work / "data", work / "held_out"
    start = time.perf_counter()
    if not data.is_dir():
        make_dataset(data, clips, seed=seed, seconds=4.0, size=64)
        make_dataset(held_out, HELD_OUT_CLIPS, seed=seed + 1, seconds=4.0, size=64)
    out.mkdir(parents=True, exist_ok=True)
    budget = minutes * 60
    frames = _frames(data, 64)
    vae_steps = None  # None: an existing VAE was kept
    if not (out / "vae" / "config.json").is_file():
        vae_steps = train_vae(frames, out / "vae", seconds=0.25 * budget, seed=seed, log=log)
    scale = latent_scale(out / "vae", frames, seed)
    del frames
    if not (out / "wav2vec" / "config.json").is_file():
        encoder = tiny_wav2vec(seed, 32, 2)
        encoder.save_pretrained(out / "wav2vec")
        write_atomic(out / "wav2vec" / "preprocessor_config.json", b'{"do_normalize": true, "sampling_rate": 16000}')
    seed_net = work / "init.safetensors"
    if not seed_net.is_file():
        from ..models import EMONet

        torch.manual_seed(seed)
        save_net(EMONet(demo_config(vae_scaling_factor=scale)), seed_net)
    # Time left after stage 0 split 30 / 55 / 15 % over the stages, at the measured step rate.
    remaining = budget - (time.perf_counter() - start)
    rate = _step_rate(seed_net, data, out, seed)
    steps = [max(50, int(remaining * share / rate[s])) for s, share in ((1, 0.30), (2, 0.55), (3, 0.15))]
    previous = seed_net
    for stage, count in zip((1, 2, 3), steps):
        log(f"stage {stage}: {count} steps")
        path, _ = train(TrainSettings(data=str(data), out=str(work / f"stage{stage}"), stage=stage, steps=count,
                                      batch_size=4, lr=5e-4, seed=seed + stage, init=str(previous),
                                      vae=str(out / "vae"), wav2vec=str(out / "wav2vec"), save_every=1000,
                                      log_every=100), log=log)
        previous = path
    net = load_net(previous)
    save_net(net, out / "net.safetensors", dtype=torch.float16)
    report = {"seed": seed, "clips": clips, "minutes": round((time.perf_counter() - start) / 60, 1),
              "steps": {"vae": vae_steps, **dict(zip(("stage1", "stage2", "stage3"), steps))}}
    report.update(evaluate(out, sorted(held_out.glob("*.mp4")), seed))
    write_atomic(out / "training_report.json", json.dumps(report, indent=1).encode())
    log(json.dumps(report))
    return report


def _step_rate(init: Path, data: Path, out: Path, seed: int) -> dict[int, float]:
    """Seconds per step of each stage, from a few timed steps."""
    from ..audio.encoder import AudioEncoder
    from ..vae import load_vae
    from .dataset import TalkingFaceDataset
    from .stages import TrainingModule

    encoder = AudioEncoder.from_pretrained(out / "wav2vec")
    rates = {}
    for stage in (1, 2, 3):
        net = load_net(init)
        ds = TalkingFaceDataset(data, net.config, encoder, stage)
        batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
        module = TrainingModule(net, load_vae(out / "vae"), stage)
        optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
        begin = time.perf_counter()
        for _ in range(3):
            loss = module(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        rates[stage] = (time.perf_counter() - begin) / 3 * 1.15  # data loading and logging
    return rates
