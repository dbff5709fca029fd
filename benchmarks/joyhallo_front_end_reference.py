"""JoyHallo's own audio front end, run by `benchmarks/joyhallo_side_by_side.py --front-end` in a child process
with the libraries JoyHallo pins (JOYHALLO_REF_PYTHONPATH: transformers 4.39.2 and its own dependencies) and its
checkout on the path; it imports nothing of this project.

    python benchmarks/joyhallo_front_end_reference.py WAV2VEC2_FOLDER AUDIO OUT.pt

Its AudioProcessor.preprocess (joyhallo/datasets/audio_processor.py), step 2 ("extract wav2vec features"), without
the vocal separator; the features, the frame count and the 16 kHz samples are saved to OUT.pt.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

CLIP, FPS, RATE = 16, 25, 16000  # configs/inference/inference.yaml: n_sample_frames, fps, sample_rate


def librosa_load(path: str, sr: int):
    """librosa.load(path, sr=sr) (0.10.2): librosa itself where it imports, else its steps done the same way."""
    try:
        import librosa

        return librosa.load(path, sr=sr)
    except ImportError:
        import soundfile
        import soxr

        y, native = soundfile.read(path, dtype="float32", always_2d=False)
        if y.ndim > 1:
            y = np.mean(y, axis=1)  # to_mono
        if native != sr:
            n = int(np.ceil(y.shape[-1] * sr / native))
            y = soxr.resample(y, native, sr, quality="soxr_hq")
            y = np.pad(y, (0, max(0, n - len(y))))[:n]  # util.fix_length
        return np.ascontiguousarray(y, dtype=np.float32), sr


def reference_front_end(folder: str, audio: str, out: str) -> None:
    """AudioProcessor.preprocess's step 2 on JoyHallo's own classes (its Wav2VecModel, transformers' extractor)."""
    import torch.nn.functional as F
    import transformers
    from transformers import Wav2Vec2FeatureExtractor

    from joyhallo.models.wav2vec import Wav2VecModel

    model = Wav2VecModel.from_pretrained(folder, local_files_only=True).eval()
    model.feature_extractor._freeze_parameters()
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder, local_files_only=True)
    speech, rate = librosa_load(audio, RATE)
    values = np.squeeze(extractor(speech, sampling_rate=rate).input_values)
    seq_len = math.ceil(len(values) / RATE * FPS)
    length = seq_len
    values = torch.from_numpy(values).float()
    if seq_len % CLIP:
        values = F.pad(values, (0, (CLIP - seq_len % CLIP) * (RATE // FPS)), "constant", 0.0)
        seq_len += CLIP - seq_len % CLIP
    with torch.no_grad():
        embeddings = model(values[None], seq_len=seq_len, output_hidden_states=True)
    features = torch.stack(embeddings.hidden_states[1:], dim=1).squeeze(0).transpose(0, 1)  # "b s d -> s b d"
    torch.save({"features": features.contiguous(), "length": length, "speech": torch.from_numpy(speech),
                "transformers": transformers.__version__}, out)


if __name__ == "__main__":
    reference_front_end(*sys.argv[1:4])
