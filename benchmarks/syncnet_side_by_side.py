"""syncnet_python's own SyncNetInstance.evaluate and ours (emo_pipeline.metrics) on the same random full-size SyncNet
weights, the same 224² face-crop frames and the same sound; and our MFCCs beside python_speech_features' on a
real WAV file.

syncnet_python (joonson/syncnet_python, MIT; SyncNetModel.py and SyncNetInstance.py) is imported at run time from
the checkout named by SYNCNET_PATH, never copied here. Its evaluate() is run whole, on the CPU (Module.cuda and
Tensor.cuda made no-ops for the run), with only what lies outside Python replaced so that both sides get the very
same arrays:
  * its two ffmpeg calls (subprocess.call) write, in the folder evaluate() has just made, the frames as NumPy
    files named 000001.jpg ... and our WAV file copied as audio.wav; a stand-in `cv2` module reads a frame with
    numpy.load (no JPEG round trip, so the frames are exactly the BGR uint8 arrays given to ours). The WAV is read
    by its own scipy.io.wavfile.read and its MFCCs by python_speech_features.mfcc, as in its code;
  * its network S() gets our random weights through its own loadParameters (torch.load of a saved state dict,
    copied by name), ours through emo_pipeline.metrics.syncnet.load_syncnet (weights-only, strict) from the same
    file;
  * recording wrappers keep what it does not return: the outputs of its forward_lip / forward_aud, the MFCCs it
    computes, and scipy.signal.medfilt's framewise confidence.

The weights: our SyncNet's default initialisation (PyTorch's Kaiming-uniform convolutions and linear layers, seeded)
with every BatchNorm's weight and bias drawn at random (1 + N(0, 0.1²), N(0, 0.1²)) and its running mean and
variance set from one training-mode pass over this clip's windows (momentum None: their plain averages), so that
every parameter is non-trivial and the activations keep a real network's scale through all layers.

The clip: the pack's drawn talking face (emo_pipeline.training.synthetic: a mouth that follows the sound's loudness)
drawn at 224², 25 fps, and its speech-like sound written as a 16 kHz mono 16-bit WAV with PyAV. Ours reads it with
the pack's PyAV reader (load_audio → float → ×32768, round-to-nearest → int16; exact for a 16-bit file).

    SYNCNET_PATH=/path/to/syncnet_python PYTHONPATH=/path/to/python_speech_features \\
        python benchmarks/syncnet_side_by_side.py [--seconds 3] [--seed 0]

Printed (syncnet_python 6efbb1c, python_speech_features 0.6, torch 2.13 CPU, fp32, seed 0, 3 s = 75 frames → 70
windows, vshift 15, batch 20; max |ours − theirs| and that over max |theirs|):

    int16 samples: 48000 equal to scipy's read of the WAV: True (and to those written: True)
    MFCC (python_speech_features vs ours, [frames, 13]) [299, 13]: max 1.3e-12  rel 3.5e-14
    MFCC inside its evaluate() vs ours, [frames, 13] [299, 13]: max 1.3e-12  rel 3.5e-14
    lip embeddings [70, 1024]: max 0.0e+00  rel 0.0e+00
    audio embeddings [70, 1024]: max 0.0e+00  rel 0.0e+00
    distances per window and offset [70, 31]: max 0.0e+00  rel 0.0e+00
    mean distance per offset [31]: max 0.0e+00  rel 0.0e+00
    framewise confidence (median-filtered) [70]: max 0.0e+00  rel 0.0e+00
    offset: theirs 15, ours 15
    Sync-C: theirs 0.504999, ours 0.504999 (diff 0.0e+00)
    Sync-D: theirs 17.447540, ours 17.447540 (diff 0.0e+00)
    windows: 70 from 75 frames; CPU seconds: theirs 7.5, ours 9.7   (2 shared cores, a test suite beside)

Everything after the MFCCs is bitwise equal. The MFCCs differ only in the DCT (ours a float64 matrix product,
scipy's an FFT route): about 1e-12 absolute, and evaluate() casts them to float32 before the network, where the
difference vanishes (the audio embeddings are equal). Equality of the lip embeddings needs the frame windows
contiguous in memory, as evaluate()'s torch.cat makes them: a channels-last view of the same values runs another
convolution kernel and gave 1.4e-5 relative. The weights are random: the offset (at the edge, 15) and Sync-C say
nothing about this clip's sync.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

import av
import numpy as np
import torch
from einops import rearrange

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emo_pipeline.metrics.mfcc import syncnet_mfcc  # noqa: E402
from emo_pipeline.metrics.sync_score import embed, score_embeddings  # noqa: E402
from emo_pipeline.metrics.syncnet import SyncNet, load_syncnet  # noqa: E402
from emo_pipeline.training.synthetic import (SAMPLE_RATE, draw_face, frame_loudness, random_look,  # noqa: E402
                                            speech_sound)

FPS = 25


def syncnet_checkout() -> Path:
    path = os.environ.get("SYNCNET_PATH")
    if not path:
        raise SystemExit("SYNCNET_PATH is not set: set it to a checkout of joonson/syncnet_python.")
    path = Path(path).resolve()
    if not (path / "SyncNetInstance.py").is_file():
        raise SystemExit(f"{path} is not a syncnet_python checkout (no SyncNetInstance.py).")
    return path


def import_syncnet(path: Path):
    """Its SyncNetModel and SyncNetInstance, with a stand-in cv2 whose imread reads our NumPy frames."""
    cv2 = types.ModuleType("cv2")
    cv2.imread = lambda name: np.load(name)
    sys.modules.setdefault("cv2", cv2)
    sys.path.insert(0, str(path))
    import SyncNetInstance  # noqa: E402  (its module, by file name)
    import SyncNetModel  # noqa: E402

    return SyncNetModel, SyncNetInstance


def make_clip(seconds: float, seed: int) -> tuple[np.ndarray, torch.Tensor]:
    """[T, 224, 224, 3] RGB uint8 drawn talking face and its [samples] sound at 16 kHz."""
    gen = torch.Generator().manual_seed(seed)
    look = random_look(gen)
    sound, envelope = speech_sound(seconds, gen)
    count = int(round(seconds * FPS))
    loud = frame_loudness(envelope, count, FPS)
    mouth = (loud / loud.max().clamp(min=1e-6)).clamp(0, 1)
    frames = torch.stack([draw_face(224, look, float(m), 0.05 * np.sin(i / 7), 0.0) for i, m in enumerate(mouth)])
    return (frames * 255).round().to(torch.uint8).numpy(), sound


def write_wav(path: Path, sound: torch.Tensor) -> np.ndarray:
    """A 16 kHz mono 16-bit WAV written with PyAV; returns the int16 samples in it."""
    samples = np.clip(np.rint(sound.numpy().astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return samples


def random_weights(net: SyncNet, frames: np.ndarray, mfcc: np.ndarray, seed: int) -> dict[str, torch.Tensor]:
    """Default init, random BatchNorm affine, running statistics from one training-mode pass over the clip."""
    gen = torch.Generator().manual_seed(seed + 1)
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.weight.data = 1 + 0.1 * torch.randn(module.weight.shape, generator=gen)
            module.bias.data = 0.1 * torch.randn(module.bias.shape, generator=gen)
            module.momentum = None  # cumulative average: the stats of this one pass
            module.reset_running_stats()
    windows = len(frames) - 5
    video = torch.from_numpy(np.ascontiguousarray(frames[..., ::-1])).float()  # BGR 0..255, as evaluate() feeds it
    clips = rearrange(torch.stack([video[i:i + 5] for i in range(windows)]), "n t h w c -> n c t h w")
    cc = torch.from_numpy(mfcc).float()
    cuts = rearrange(torch.stack([cc[:, 4 * i:4 * i + 20] for i in range(windows)]), "n f w -> n 1 f w")
    net.train()
    with torch.no_grad():  # all windows in one batch
        net.forward_lip(clips)
        net.forward_aud(cuts)
    net.eval()
    return {k: v.clone() for k, v in net.state_dict().items()}


def compare(name: str, ours: np.ndarray | torch.Tensor, theirs: np.ndarray | torch.Tensor) -> str:
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    if ours.shape != theirs.shape:
        return f"{name}: shapes differ, ours {ours.shape} theirs {theirs.shape}"
    diff = np.abs(ours - theirs).max()
    return f"{name} {list(ours.shape)}: max {diff:.1e}  rel {diff / max(np.abs(theirs).max(), 1e-30):.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    SyncNetModel, SyncNetInstance = import_syncnet(syncnet_checkout())
    import python_speech_features
    from scipy.io import wavfile

    work = Path(tempfile.mkdtemp(prefix="syncnet_side_by_side_"))
    try:
        frames_rgb, sound = make_clip(args.seconds, args.seed)
        wav = work / "clip.wav"
        written = write_wav(wav, sound)

        # --- MFCCs: python_speech_features on scipy's read (syncnet_python's route) vs ours through PyAV ---
        rate, theirs_samples = wavfile.read(wav)
        theirs_mfcc = python_speech_features.mfcc(theirs_samples, rate)
        ours_mfcc, ours_samples = syncnet_mfcc(wav)
        lines = [f"int16 samples: {len(ours_samples)} equal to scipy's read of the WAV: "
                 f"{np.array_equal(ours_samples, theirs_samples)} (and to those written: "
                 f"{np.array_equal(ours_samples, written)})",
                 compare("MFCC (python_speech_features vs ours, [frames, 13])", ours_mfcc.T, theirs_mfcc)]

        # --- shared random weights ---
        torch.manual_seed(args.seed)
        state = random_weights(SyncNet(), frames_rgb, ours_mfcc, args.seed)
        weights = work / "syncnet_random.model"
        torch.save(state, weights)
        ours_net = load_syncnet(weights)

        restore = (torch.nn.Module.cuda, torch.Tensor.cuda)
        torch.nn.Module.cuda = lambda self, *a, **k: self
        torch.Tensor.cuda = lambda self, *a, **k: self
        try:
            instance = SyncNetInstance.SyncNetInstance()
            instance.loadParameters(str(weights))
            recorded: dict[str, list] = {"lip": [], "aud": [], "mfcc": [], "fconfm": []}
            s = instance.__S__
            forward_lip, forward_aud = s.forward_lip, s.forward_aud
            s.forward_lip = lambda x: recorded["lip"].append(forward_lip(x)) or recorded["lip"][-1]
            s.forward_aud = lambda x: recorded["aud"].append(forward_aud(x)) or recorded["aud"][-1]
            pysf_mfcc = python_speech_features.mfcc
            SyncNetInstance.python_speech_features = types.SimpleNamespace(
                mfcc=lambda *a: recorded["mfcc"].append(pysf_mfcc(*a)) or recorded["mfcc"][-1])
            medfilt = SyncNetInstance.signal.medfilt
            SyncNetInstance.signal = types.SimpleNamespace(
                medfilt=lambda *a, **k: recorded["fconfm"].append(medfilt(*a, **k)) or recorded["fconfm"][-1])

            def fake_ffmpeg(command: str, **_) -> int:  # its two ffmpeg calls: frames, then audio.wav
                folder = Path(command.split()[-1]).parent
                if "image2" in command:
                    for i, frame in enumerate(frames_rgb[..., ::-1]):  # cv2.imread gives BGR
                        with open(folder / f"{i + 1:06d}.jpg", "wb") as f:
                            np.save(f, np.ascontiguousarray(frame))
                else:
                    shutil.copy(wav, folder / "audio.wav")
                return 0

            SyncNetInstance.subprocess = types.SimpleNamespace(call=fake_ffmpeg)
            opt = types.SimpleNamespace(tmp_dir=str(work / "pytmp"), reference="clip", batch_size=20, vshift=15)
            start = time.perf_counter()
            theirs_offset, theirs_conf, theirs_dists = instance.evaluate(opt, str(work / "clip.avi"))
            theirs_time = time.perf_counter() - start
        finally:
            torch.nn.Module.cuda, torch.Tensor.cuda = restore

        start = time.perf_counter()
        lip, aud = embed(ours_net, frames_rgb, ours_mfcc, samples=len(ours_samples))
        ours = score_embeddings(lip, aud, vshift=15)
        ours_time = time.perf_counter() - start

        theirs_lip = torch.cat(recorded["lip"]).detach()
        theirs_aud = torch.cat(recorded["aud"]).detach()
        theirs_mdist = torch.mean(torch.stack([torch.from_numpy(d) for d in theirs_dists], 1), 1)
        theirs_sync_d = float(theirs_mdist.min())
        lines += [
            compare("MFCC inside its evaluate() vs ours, [frames, 13]", ours_mfcc.T, recorded["mfcc"][0]),
            compare("lip embeddings", lip, theirs_lip),
            compare("audio embeddings", aud, theirs_aud),
            compare("distances per window and offset", ours.distances, theirs_dists),
            compare("mean distance per offset", ours.mean_distances, theirs_mdist),
            compare("framewise confidence (median-filtered)", ours.frame_confidence, recorded["fconfm"][0]),
            f"offset: theirs {int(theirs_offset)}, ours {ours.offset}",
            f"Sync-C: theirs {float(theirs_conf):.6f}, ours {ours.sync_c:.6f} "
            f"(diff {abs(ours.sync_c - float(theirs_conf)):.1e})",
            f"Sync-D: theirs {theirs_sync_d:.6f}, ours {ours.sync_d:.6f} (diff {abs(ours.sync_d - theirs_sync_d):.1e})",
            f"windows: {ours.windows} from {len(frames_rgb)} frames; CPU seconds: theirs {theirs_time:.1f}, ours "
            f"{ours_time:.1f}",
        ]
        print("\n".join(lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
