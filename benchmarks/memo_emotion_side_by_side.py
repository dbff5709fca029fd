"""MEMO's own emotion labelling (memo/utils/audio_utils.py `extract_audio_emotion_labels`, its
AudioEmotionClassifierModel and its pipeline's per-clip torch.mode) against ours (emo_pipeline/audio/emotion.py:
`frame_labels`, `clip_labels` through `EmotionDetector.clips`) on the same features: identical labels expected.

MEMO's code is run from the checkout named by MEMO_PATH (a clone of memoavatar/memo, or its `memo/` folder
extracted with `git archive`), never copied here:

* memo/models/emotion_classifier.py is loaded by file path (it needs only torch and diffusers); its
  AudioEmotionClassifierModel is built directly with its defaults (5 layers, 2048 channels, 9 classes) and
  given the shared weights; its `from_pretrained` is replaced by one that returns that instance.
* memo/utils/audio_utils.py is loaded by file path with stand-ins in sys.modules (while it is imported) for what
  it imports but this check does not run: `torchaudio` (`load` returns the file as our PyAV reader decodes it,
  [channels, samples], and its rate; `functional.resample` is our resampler, emo_pipeline/audio/resample.py),
  `funasr.download.download_from_hub.download_model` (returns {"init_param": None}),
  `funasr.models.emotion2vec.model.Emotion2vec` (returns OUR emotion2vec+ large network: FunASR's place is taken
  by ours here, since the encoder's own parity with FunASR is benchmarks/emotion2vec_side_by_side.py),
  `audio_separator.separator.Separator`, `librosa`, `transformers.Wav2Vec2FeatureExtractor` and
  `memo.models.wav2vec.Wav2VecModel` (empty). Its own `load_emotion2vec_model` is made a no-op (the network
  already holds the weights). Then MEMO's `extract_audio_emotion_labels` itself runs: its channel 0, its
  segments, its F.layer_norm, `extract_features(x)["x"].mean(dim=1)`, its classifier, softmax and argmax, its
  per-sample label writes and its F.interpolate to `audio_length`.

Weights: emotion2vec+ large at full size with random weights at a real initialisation's scale (the
`random_state` of emotion2vec_side_by_side.py, seed 0), one instance used by both sides. The classifier:
PyTorch's default Linear init (seed 1), then made to discriminate, since a random network labels every segment
alike: fc1's bias is set to −fc1.weight · (the mean emotion2vec feature of 10 two-second calibration sounds,
not the test audio) so that the hidden units respond to how a segment differs from the average, and fc5's
weight is scaled so that its logits have a spread of about 8 on those sounds, and its bias shifted so that no
class is favoured on their average (a stand-in that tells sounds apart; MEMO's trained classifier is not used).
The one state dict loads strictly into both MEMO's classifier and our EmotionClassifier (the same keys).

Audio: five clips written as WAV files with PyAV and read back with emo_pipeline.io.media.load_audio, made of
pieces that sound very different (silence, the demo's speech-like sound, white and brown noise, 440 Hz and
3 kHz tones, a chirp, a 150 Hz square wave, a click train): 0.7 s, 2.3 s, 5.5 s and 17 s at 16 kHz mono (as
MEMO's inference.py gives its function a 16 kHz file made by ffmpeg), and 9.37 s at 24 kHz stereo (channel 1
other sound) so that both sides also resample (MEMO resamples [channels, samples] then takes channel 0; ours
takes channel 0 then resamples; the resampler is the same).

audio_length as MEMO's preprocess_audio computes it at fps 30 with 16-frame clips: ceil(samples / 16000 · 30)
of the 16 kHz audio, padded up to a multiple of 16. Compared:
* frames: MEMO's returned tensor against our `frame_labels(channel 0 at 16 kHz, audio_length, label_of)`;
* clips: torch.mode of each 16 of MEMO's labels (as its inference.py slices them and its pipeline takes them)
  against `EmotionDetector(encoder, classifier).clips(waveform, rate, ceil(samples / 16000 · 30), 16)` (which pads
  to whole clips itself), as label names.

    MEMO_PATH=/tmp/scratch/memo_src python benchmarks/memo_emotion_side_by_side.py

Result (CPU, 2 cores, torch 2.13.0+cpu, diffusers 0.42.1, MEMO at a5aee30):

    0.7 s (16 kHz mono): audio_length 32 (2 clips): frames differing 0/32, clips 0/2; clips: sad, sad
    2.3 s: audio_length 80 (5 clips): frames 0/80, clips 0/5; other, other, happy, happy, happy
    5.5 s: audio_length 176 (11 clips): frames 0/176, clips 0/11; angry x4, happy x4, unknown x3
    17 s: audio_length 512 (32 clips): frames 0/512, clips 0/32; angry, angry, fearful, fearful, angry x4, happy,
      neutral x4, sad, sad, other, other, happy x4, unknown, unknown, happy, angry x8
    9.37 s, 24 kHz stereo (149920 samples at 16 kHz; MEMO's torchaudio.load gave [2, 224880] at 24 kHz, then its
      resample was called): audio_length 288 (18 clips): frames 0/288, clips 0/18; unknown, unknown, happy x6,
      other, other, disgusted, disgusted, neutral, neutral, unknown, other x3
    frames compared 1088, differing 0; clips compared 68, differing 0 (16 clips hold frames of two labels, 2 of
      them a tie)
    label histogram (frames, MEMO's): angry 275, disgusted 31, fearful 30, happy 321, neutral 91, other 139,
      sad 62, unknown 139
    label histogram (clips, MEMO's): angry 18, disgusted 2, fearful 2, happy 19, neutral 6, other 9, sad 4,
      unknown 8
    (8 of the 9 labels occur; "surprised" does not. 310 s in all on 2 busy cores: about 40 emotion2vec segments
    per side, ours run twice, through frame_labels and through clips.)
"""

from __future__ import annotations

import argparse
import collections
import importlib.machinery
import importlib.util
import math
import sys
import tempfile
import time
import types
from pathlib import Path

import av
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from emotion2vec_side_by_side import random_state  # noqa: E402
from reference_common import checkout_path, quiet  # noqa: E402

from emo_pipeline.audio.emotion import EmotionClassifier, EmotionDetector, clip_labels, frame_labels  # noqa: E402
from emo_pipeline.audio.emotion2vec import LARGE, SAMPLE_RATE, Emotion2vec, segment_embedding  # noqa: E402
from emo_pipeline.audio.resample import resample  # noqa: E402
from emo_pipeline.demo_inputs import speech_like_audio  # noqa: E402
from emo_pipeline.families import EMOTIONS  # noqa: E402
from emo_pipeline.io.media import load_audio  # noqa: E402

FPS, CLIP = 30, 16  # MEMO's inference config: fps 30, num_generated_frames_per_clip 16


# ---------------------------------------------------------------- sounds

def piece(kind: str, seconds: float, rate: int, seed: int) -> torch.Tensor:
    """`seconds` of one kind of sound at `rate`, [samples], within ±1."""
    n = round(seconds * rate)
    t = torch.arange(n, dtype=torch.float64) / rate
    gen = torch.Generator().manual_seed(seed)
    if kind == "silence":
        x = torch.zeros(n, dtype=torch.float64)
    elif kind == "speech":
        x = speech_like_audio(seconds + 0.01, seed=seed)[0]
        if rate != SAMPLE_RATE:
            x = resample(x[None], SAMPLE_RATE, rate)[0]
        x = x[:n].double()
    elif kind == "noise":
        x = 0.3 * torch.randn(n, generator=gen, dtype=torch.float64)
    elif kind == "brown":
        x = torch.cumsum(torch.randn(n, generator=gen, dtype=torch.float64), 0)
        x = x - torch.linspace(float(x[0]), float(x[-1]), n, dtype=torch.float64)
        x = 0.5 * x / x.abs().max().clamp_min(1e-9)
    elif kind == "tone440":
        x = 0.5 * torch.sin(2 * math.pi * 440 * t)
    elif kind == "tone3k":
        x = 0.3 * torch.sin(2 * math.pi * 3000 * t)
    elif kind == "chirp":
        x = 0.4 * torch.sin(2 * math.pi * (100 * t + (6000 - 100) / (2 * max(seconds, 1e-3)) * t * t))
    elif kind == "square":
        x = 0.3 * torch.sign(torch.sin(2 * math.pi * 150 * t))
    elif kind == "clicks":
        x = torch.zeros(n, dtype=torch.float64)
        x[:: max(rate // 12, 1)] = 0.9
    else:
        raise ValueError(kind)
    return x.float()


def compose(parts: list[tuple[str, float]], rate: int, seed: int) -> torch.Tensor:
    return torch.cat([piece(kind, seconds, rate, seed + i) for i, (kind, seconds) in enumerate(parts)])


def test_clips() -> list[tuple[str, int, torch.Tensor]]:
    """(name, rate, [channels, samples]) of the five clips."""
    clips = []
    r = SAMPLE_RATE
    clips.append(("0.7 s", r, compose([("speech", 0.7)], r, 10)[None]))
    clips.append(("2.3 s", r, compose([("silence", 1.2), ("noise", 1.1)], r, 20)[None]))
    five = [("tone440", 1.0), ("speech", 2.0), ("noise", 1.5), ("chirp", 1.0)]
    clips.append(("5.5 s", r, compose(five, r, 30)[None]))
    seventeen = [("speech", 2.0), ("silence", 1.5), ("noise", 2.0), ("tone3k", 1.5), ("square", 2.0), ("brown", 1.5),
                 ("chirp", 2.0), ("clicks", 1.5), ("tone440", 1.5), ("speech", 1.5)]
    clips.append(("17 s", r, compose(seventeen, r, 40)[None]))
    r24 = 24000
    left = compose([("noise", 1.37), ("speech", 2.5), ("silence", 1.0), ("square", 1.5), ("tone3k", 1.5),
                    ("brown", 1.5)], r24, 50)
    right = compose([("tone440", 9.37)], r24, 60)
    clips.append(("9.37 s, 24 kHz stereo", r24, torch.stack([left, right])))
    return clips


def calibration_sounds() -> list[torch.Tensor]:
    kinds = ["silence", "speech", "noise", "brown", "tone440", "tone3k", "chirp", "square", "clicks", "speech"]
    return [piece(kind, 2.0, SAMPLE_RATE, 900 + i) for i, kind in enumerate(kinds)]


def write_wav(path: Path, sound: torch.Tensor, rate: int) -> None:
    """[channels, samples] as a 16-bit WAV, written with PyAV."""
    samples = np.clip(np.rint(sound.numpy().astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(samples.T.reshape(1, -1).copy(), format="s16", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


# ---------------------------------------------------------------- MEMO's code, loaded by file path

def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__path__ = []
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


def _load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class _Empty:
    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError("a stand-in: not used by this check")


def load_memo(memo_path: Path, encoder: Emotion2vec, classifier_state: dict, reads: list) -> tuple:
    """MEMO's extract_audio_emotion_labels (its module) and its classifier instance, wired to our encoder."""
    with quiet():
        classifier_module = _load_file("memo.models.emotion_classifier",
                                       memo_path / "memo/models/emotion_classifier.py")
        classifier = classifier_module.AudioEmotionClassifierModel()  # its defaults
    classifier.load_state_dict(classifier_state, strict=True)
    classifier.eval()
    classifier_module.AudioEmotionClassifierModel.from_pretrained = classmethod(lambda cls, *a, **k: classifier)

    def torchaudio_load(path):
        waveform, rate = load_audio(path)
        reads.append((Path(path).name, tuple(waveform.shape), rate))
        return waveform, rate

    def torchaudio_resample(waveform, orig_freq, new_freq):
        reads.append(("resample", orig_freq, new_freq))
        return resample(waveform, orig_freq, new_freq)

    def emotion2vec_stub(**kwargs):
        assert kwargs.get("vocab_size") == -1
        return encoder

    stubs = {
        "torchaudio": _module("torchaudio", load=torchaudio_load,
                              functional=_module("torchaudio.functional", resample=torchaudio_resample)),
        "librosa": _module("librosa"),
        "audio_separator": _module("audio_separator"),
        "audio_separator.separator": _module("audio_separator.separator", Separator=_Empty),
        "funasr": _module("funasr"),
        "funasr.download": _module("funasr.download"),
        "funasr.download.download_from_hub": _module("funasr.download.download_from_hub",
                                                     download_model=lambda **kw: {"init_param": None}),
        "funasr.models": _module("funasr.models"),
        "funasr.models.emotion2vec": _module("funasr.models.emotion2vec"),
        "funasr.models.emotion2vec.model": _module("funasr.models.emotion2vec.model", Emotion2vec=emotion2vec_stub),
        "transformers": _module("transformers", Wav2Vec2FeatureExtractor=_Empty),
        "memo": _module("memo"),
        "memo.models": _module("memo.models"),
        "memo.models.wav2vec": _module("memo.models.wav2vec", Wav2VecModel=_Empty),
    }
    stubs["torchaudio.functional"] = stubs["torchaudio"].functional
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        audio_utils = _load_file("memo.utils.audio_utils", memo_path / "memo/utils/audio_utils.py")
    finally:  # the stand-ins stay bound in audio_utils' globals only
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    audio_utils.load_emotion2vec_model = lambda **kwargs: None
    return audio_utils, classifier


# ---------------------------------------------------------------- weights

def classifier_weights(encoder: Emotion2vec, seed: int) -> dict:
    """MEMO's classifier's keys with PyTorch's default init, fc1 centred on the calibration sounds' mean feature
    and fc5 scaled so that its logits spread (see the module docstring)."""
    torch.manual_seed(seed)
    net = EmotionClassifier()
    features = torch.stack([segment_embedding(encoder, sound) for sound in calibration_sounds()])
    with torch.no_grad():
        fc1 = net.layers.fc1
        fc1.bias.copy_(-(fc1.weight @ features.mean(dim=0)))
        logits = net(features)
        net.layers.fc5.weight.mul_(8.0 / logits.std().clamp_min(1e-12))
        net.layers.fc5.bias.sub_(net(features).mean(dim=0))  # no class favoured on average
    return {k: v.clone() for k, v in net.state_dict().items()}


def audio_length(samples_16k: int) -> int:
    """MEMO's preprocess_audio: ceil(len / 16000 * fps), padded up to a multiple of the clip length."""
    length = math.ceil(samples_16k / SAMPLE_RATE * FPS)
    return length + (CLIP - length % CLIP) % CLIP


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memo", default=None, help="MEMO checkout (else MEMO_PATH)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    memo_path = checkout_path(args.memo, "MEMO_PATH", "memo/utils/audio_utils.py", "memoavatar/memo")
    torch.set_grad_enabled(False)
    started = time.perf_counter()

    encoder = Emotion2vec(LARGE).eval()
    encoder.load_state_dict(random_state(encoder, args.seed), strict=True)
    state = classifier_weights(encoder, args.seed + 1)
    ours_classifier = EmotionClassifier()
    ours_classifier.load_state_dict(state, strict=True)
    detector = EmotionDetector(encoder, ours_classifier)
    reads: list = []
    audio_utils, memo_classifier = load_memo(memo_path, encoder, state, reads)
    print(f"emotion2vec+ large (random, seed {args.seed}) and the classifier ready in "
          f"{time.perf_counter() - started:.0f} s; MEMO's classifier: {type(memo_classifier).__module__}."
          f"{type(memo_classifier).__name__}, {memo_classifier.num_emotion_classes} classes")

    totals = collections.Counter()
    histogram = {"frames": collections.Counter(), "clips": collections.Counter()}
    with tempfile.TemporaryDirectory() as tmp:
        for n, (name, rate, sound) in enumerate(test_clips()):
            path = Path(tmp) / f"clip{n}.wav"
            write_wav(path, sound, rate)
            waveform, file_rate = load_audio(path)
            assert file_rate == rate
            channel0 = waveform[0] if rate == SAMPLE_RATE else resample(waveform[0][None], rate, SAMPLE_RATE)[0]
            length = audio_length(channel0.numel())
            frames = math.ceil(channel0.numel() / SAMPLE_RATE * FPS)

            t0 = time.perf_counter()
            reads.clear()
            theirs, classes = audio_utils.extract_audio_emotion_labels(
                model="memoavatar/memo", wav_path=str(path), emotion2vec_model="iic/emotion2vec_plus_large",
                audio_length=length, sample_rate=SAMPLE_RATE, device="cpu")
            t1 = time.perf_counter()
            mine = frame_labels(channel0, length, detector.label_of)
            t2 = time.perf_counter()
            mine_clips = detector.clips(waveform, rate, frames, CLIP)
            t3 = time.perf_counter()

            assert classes == len(EMOTIONS) and theirs.shape == (length,), (classes, theirs.shape)
            theirs_clips = [EMOTIONS[int(torch.mode(theirs[s:s + CLIP]).values.item())] for s in range(0, length, CLIP)]
            assert clip_labels(theirs.long(), CLIP) == [EMOTIONS.index(c) for c in theirs_clips]
            frame_diff = int((theirs.long() != mine).sum())
            clip_diff = sum(a != b for a, b in zip(theirs_clips, mine_clips)) + abs(len(theirs_clips) - len(mine_clips))
            mixed = ties = 0
            for s in range(0, length, CLIP):
                counts = torch.bincount(theirs[s:s + CLIP].long(), minlength=len(EMOTIONS))
                mixed += int((counts > 0).sum() > 1)
                ties += int((counts == counts.max()).sum() > 1)
            totals.update(frames=length, frame_diff=frame_diff, clips=len(theirs_clips), clip_diff=clip_diff,
                          mixed=mixed, ties=ties)
            histogram["frames"].update(EMOTIONS[int(v)] for v in theirs)
            histogram["clips"].update(theirs_clips)
            runs = "".join(str(int(v)) for v in theirs[::CLIP // 2])
            print(f"{name:>22}: {channel0.numel()} samples at 16 kHz, audio_length {length} ({length // CLIP} clips); "
                  f"MEMO read {reads}; frames differing {frame_diff}/{length}, clips differing "
                  f"{clip_diff}/{len(theirs_clips)}; MEMO {t1 - t0:.0f} s, ours frames {t2 - t1:.0f} s, "
                  f"clips {t3 - t2:.0f} s")
            print(f"{'':>22}  labels every 8th frame: {runs}")
            print(f"{'':>22}  clips: {', '.join(theirs_clips)}")
    print(f"frames compared {totals['frames']}, differing {totals['frame_diff']}; clips compared {totals['clips']}, "
          f"differing {totals['clip_diff']} ({totals['mixed']} clips hold frames of two labels, {totals['ties']} of "
          f"them a tie)")
    for key in ("frames", "clips"):
        print(f"label histogram ({key}, MEMO's): " +
              ", ".join(f"{label} {histogram[key][label]}" for label in EMOTIONS if histogram[key][label]))
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
