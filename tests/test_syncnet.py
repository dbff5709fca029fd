"""SyncNet lip-sync scoring (emo_pipeline.metrics: mfcc.py, syncnet.py, sync_score.py): the network has exactly
syncnet_python's keys and shapes (tests/data/syncnet_keys.tsv, written by tests/make_syncnet_keys.py) and loads a
state dict strictly and weights-only; MFCCs against values worked out by hand (and python_speech_features' own
output on a WAV written with PyAV, where that package is installed); the scoring procedure on hand-built
embeddings and on a stand-in network that shows which frames and MFCC columns each window takes; bad inputs
refused with plain words. Parity with syncnet_python's evaluate() itself: benchmarks/syncnet_side_by_side.py."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch import nn

from emo_pipeline.io.loading import CheckpointError
from emo_pipeline.metrics import mfcc as mf
from emo_pipeline.metrics.sync_score import embed, offset_distances, score, score_embeddings, window_count
from emo_pipeline.metrics.syncnet import SyncNet, load_syncnet
from test_hallo_layout import header_counts, read_reference_keys

KEYS = Path(__file__).parent / "data" / "syncnet_keys.tsv"


# ---------------------------------------------------------------- layout and loading


def test_syncnet_matches_syncnet_pythons_keys_and_shapes():
    theirs = {k.split(".", 1)[1]: v for k, v in read_reference_keys(KEYS).items()}
    assert len(theirs) == header_counts(KEYS)["all"][0] == 102
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in SyncNet().state_dict().items()}
    assert sorted(set(theirs) - set(ours)) == [] and sorted(set(ours) - set(theirs)) == []
    assert {k: v for k, v in ours.items() if theirs[k] != v} == {}
    tensors, values = header_counts(KEYS)["syncnet_v2"]
    assert (len(ours), sum(math.prod(s) for s in ours.values())) == (tensors, values) == (102, 13_640_270)


def _random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = SyncNet()
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2)
    return net.state_dict()


@pytest.mark.parametrize("legacy", [False, True])
def test_load_syncnet_reads_a_state_dict_weights_only(tmp_path, legacy):
    """The file syncnet_python's loadParameters reads is a flat state dict (it iterates .items()); an old one is
    in torch's legacy (non-zip) format and may lack the num_batches_tracked counters."""
    state = _random_state()
    if legacy:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "syncnet_v2.model"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    net = load_syncnet(path)
    assert not net.training
    loaded = net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_load_syncnet_refuses_other_files_plainly(tmp_path):
    state = _random_state()
    cases = {
        "missing.model": {k: v for k, v in state.items() if k != "netfclip.3.weight"},
        "extra.model": {**state, "netcnnlip.99.weight": torch.zeros(1)},
        "shape.model": {**state, "netfcaud.3.weight": torch.zeros(512, 512)},
    }
    words = {"missing.model": "missing 1: netfclip.3.weight", "extra.model": "unexpected 1: netcnnlip.99.weight",
             "shape.model": "wrong shape 1: netfcaud.3.weight (512, 512) (SyncNet has (1024, 512))"}
    for name, bad in cases.items():
        torch.save(bad, tmp_path / name)
        with pytest.raises(CheckpointError, match="does not hold SyncNet's weights") as err:
            load_syncnet(tmp_path / name)
        assert words[name] in str(err.value)
    torch.save({"state": [1, 2]}, tmp_path / "list.model")
    with pytest.raises(CheckpointError, match="not a state dict of tensors"):
        load_syncnet(tmp_path / "list.model")
    torch.save(SyncNet(), tmp_path / "module.model")  # a whole pickled module: code, refused unread
    with pytest.raises(CheckpointError, match="carries code"):
        load_syncnet(tmp_path / "module.model")
    with pytest.raises(FileNotFoundError, match="syncnet_v2.model"):
        load_syncnet(tmp_path / "absent.model")


def test_syncnet_streams_give_1024_d_embeddings_and_check_shapes():
    net = SyncNet().eval()
    with torch.no_grad():
        assert net.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
        assert net.forward_lip(torch.rand(1, 3, 5, 224, 224) * 255).shape == (1, 1024)
    with pytest.raises(ValueError, match=r"\[N, 1, 13, 20\]"):
        net.forward_aud(torch.randn(2, 1, 13, 21))
    with pytest.raises(ValueError, match=r"\[N, 3, 5, 224, 224\]"):
        net.forward_lip(torch.randn(1, 3, 5, 112, 112))


@pytest.mark.skipif(not os.environ.get("SYNCNET_PATH"), reason="SYNCNET_PATH (a syncnet_python checkout) not set")
def test_same_outputs_as_syncnet_pythons_network():
    sys.path.insert(0, os.environ["SYNCNET_PATH"])
    import SyncNetModel

    state = _random_state(1)
    theirs, ours = SyncNetModel.S(), SyncNet()
    theirs.load_state_dict(state, strict=True)
    ours.load_state_dict(state, strict=True)
    theirs.eval(), ours.eval()
    audio, video = torch.randn(3, 1, 13, 20) * 10, torch.rand(2, 3, 5, 224, 224) * 255
    with torch.no_grad():
        assert torch.equal(ours.forward_aud(audio), theirs.forward_aud(audio))
        assert torch.equal(ours.forward_lip(video), theirs.forward_lip(video))


# ---------------------------------------------------------------- MFCCs


def test_mfcc_of_silence_is_log_eps_then_zeros():
    """No sound: every filter energy and the frame energy are replaced by float eps, so the log-mel vector is
    constant, its DCT is all in coefficient 0, and coefficient 0 is then replaced by log(eps)."""
    for n, frames in ((1, 1), (400, 1), (401, 2), (560, 2), (561, 3), (16000, 99)):
        out = mf.mfcc(np.zeros(n, np.int16))
        assert out.shape == (frames, 13) and mf.frame_count(n) == frames
        assert np.allclose(out[:, 0], math.log(np.finfo(float).eps), rtol=0, atol=1e-12)
        assert np.abs(out[:, 1:]).max() < 1e-11  # log(eps) ≈ −36 through a float64 DCT and lifter


def test_mfcc_energy_of_an_impulse_by_hand():
    """An impulse A: after pre-emphasis the frame is [A, -0.97A, 0, ...], whose power spectrum is
    A²(1 + 0.97² - 2·0.97·cos(2πk/512))/512; the cosines sum to zero over k = 0..256, so the energy is
    257·A²·1.9409/512 and coefficient 0 its log."""
    a = 1000.0
    signal = np.zeros(400)
    signal[0] = a
    out = mf.mfcc(signal)
    assert out.shape == (1, 13)
    assert out[0, 0] == pytest.approx(math.log(257 * a * a * (1 + 0.97 ** 2) / 512), rel=1e-12)
    # the log-mel energies of that spectrum, each filter summed by hand, through the DCT-II and lifter by formula
    bins = np.floor(513 * (700 * (10 ** (np.linspace(0, 2595 * math.log10(1 + 8000 / 700), 28) / 2595) - 1)) / 16000)
    k = np.arange(257)
    power = a * a * (1 + 0.97 ** 2 - 2 * 0.97 * np.cos(2 * np.pi * k / 512)) / 512
    logmel = []
    for j in range(26):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        weight = np.where(k < mid, (k - lo) / (mid - lo), (hi - k) / (hi - mid))
        weight[(k < lo) | (k >= hi)] = 0
        logmel.append(math.log(float((weight * power).sum())))
    for c in range(1, 13):
        dct = math.sqrt(2 / 26) * sum(logmel[n] * math.cos(math.pi * c * (2 * n + 1) / 52) for n in range(26))
        assert out[0, c] == pytest.approx((1 + 11 * math.sin(math.pi * c / 22)) * dct, rel=1e-9, abs=1e-9)


def test_dct_matrix_is_orthonormal():
    full = mf.dct_ortho(26, 26)
    assert np.allclose(full.T @ full, np.eye(26), atol=1e-12)
    assert np.allclose(mf.dct_ortho(26, 13), full[:, :13])


def test_to_int16_as_ffmpeg_writes_pcm_s16le():
    x = np.array([0.0, 1.0, -1.0, 2.0, 0.5 / 32768, 1.5 / 32768, -2.5 / 32768, 1000 / 32768])
    assert mf.to_int16(x).tolist() == [0, 32767, -32768, 32767, 0, 2, -2, 1000]


def _write_wav(path: Path, samples: np.ndarray, rate: int = 16000, layout: str = "mono") -> None:
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)


def _speech(seconds: float = 1.3, seed: int = 5) -> np.ndarray:
    from emo_pipeline.training.synthetic import speech_sound

    sound, _ = speech_sound(seconds, torch.Generator().manual_seed(seed))
    return mf.to_int16(sound)


def test_syncnet_mfcc_reads_a_wav_back_to_its_int16_samples(tmp_path):
    samples = _speech()
    _write_wav(tmp_path / "a.wav", samples)
    features, read = mf.syncnet_mfcc(tmp_path / "a.wav")
    assert np.array_equal(read, samples)  # 16-bit → float → ×32768 round → 16-bit is exact
    assert features.shape == (13, mf.frame_count(len(samples))) and features.dtype == np.float64
    assert np.array_equal(features, mf.mfcc(samples).T)


def test_syncnet_mfcc_resamples_and_mixes_down():
    wave = torch.randn(2, 44100) * 0.1
    features, samples = mf.syncnet_mfcc(wave, 44100)
    assert samples.dtype == np.int16 and len(samples) == 16000 and features.shape == (13, 99)
    with pytest.raises(ValueError, match="sample_rate"):
        mf.syncnet_mfcc(wave)
    with pytest.raises(ValueError, match="1-D"):
        mf.mfcc(np.zeros((2, 400)))


def test_mfcc_equals_python_speech_features_on_a_wav(tmp_path):
    psf = pytest.importorskip("python_speech_features")
    wavfile = pytest.importorskip("scipy.io.wavfile")
    _write_wav(tmp_path / "a.wav", _speech(2.0, 9))
    rate, theirs_samples = wavfile.read(tmp_path / "a.wav")  # syncnet_python's route
    theirs = psf.mfcc(theirs_samples, rate)
    ours, samples = mf.syncnet_mfcc(tmp_path / "a.wav")
    assert np.array_equal(samples, theirs_samples)
    assert ours.T.shape == theirs.shape
    assert np.abs(ours.T - theirs).max() <= 1e-12 * np.abs(theirs).max() + 1e-10


# ---------------------------------------------------------------- scoring


def _expected_distances(lip: np.ndarray, aud: np.ndarray, vshift: int) -> np.ndarray:
    """calc_pdist written out: audio padded with zero rows, ‖lip_i − aud_{i+k−vshift} + 1e-6‖."""
    padded = np.concatenate([np.zeros((vshift, aud.shape[1])), aud, np.zeros((vshift, aud.shape[1]))])
    return np.array([[np.linalg.norm(lip[i] - padded[i + k] + 1e-6) for k in range(2 * vshift + 1)]
                     for i in range(len(lip))])


@pytest.mark.parametrize("shift", [-3, 0, 2])
def test_scores_of_embeddings_built_to_match_at_a_known_shift(shift):
    """Lip embedding i equals audio embedding i+shift (a little noise on top): the smallest mean distance is at
    offset index vshift+shift, so offset = −shift, Sync-D that mean, Sync-C the median less it."""
    gen = torch.Generator().manual_seed(3)
    n, dim, vshift = 40, 64, 15
    aud = torch.randn(n + 10, dim, generator=gen)
    lip = aud[5 + shift:5 + shift + n] + 0.05 * torch.randn(n, dim, generator=gen)
    aud = aud[5:5 + n]
    result = score_embeddings(lip, aud, vshift)
    expected = _expected_distances(lip.double().numpy(), aud.double().numpy(), vshift)
    assert np.allclose(result.distances, expected, rtol=1e-5)
    mean = expected.mean(0)
    assert np.allclose(result.mean_distances, mean, rtol=1e-5)
    assert int(np.argmin(mean)) == vshift + shift and result.offset == -shift
    assert result.sync_d == pytest.approx(mean.min(), rel=1e-5)
    assert result.sync_c == pytest.approx(np.median(mean) - mean.min(), rel=1e-4)
    fconf = np.median(mean) - expected[:, vshift + shift]
    padded = np.concatenate([np.zeros(4), fconf, np.zeros(4)])
    assert np.allclose(result.frame_confidence, [np.median(padded[i:i + 9]) for i in range(n)], atol=1e-4)
    assert result.windows == n and result.distances.shape == (n, 31)


def test_frame_confidence_matches_scipy_medfilt():
    signal = pytest.importorskip("scipy.signal")
    gen = torch.Generator().manual_seed(4)
    lip, aud = torch.randn(23, 16, generator=gen), torch.randn(23, 16, generator=gen)
    result = score_embeddings(lip, aud, 5)
    dists = offset_distances(lip, aud, 5)
    mdist = dists.T.contiguous().mean(1)
    fconf = torch.median(mdist).numpy() - dists[:, int(torch.argmin(mdist))].numpy()
    assert np.array_equal(result.frame_confidence, signal.medfilt(fconf, kernel_size=9))


class _Probe(nn.Module):
    """Stands in for SyncNet: a lip window's embedding is pixel (0, 0) of its five frames as the network sees
    them (channel-major, BGR), an audio window's the first MFCC row of its 20 columns."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (3, 5, 224, 224) and x.is_contiguous()
        return x[:, :, :, 0, 0].reshape(len(x), 15)

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (1, 13, 20)
        return x[:, 0, 0, :]


def _marked_frames(count: int) -> torch.Tensor:
    frames = torch.zeros(count, 224, 224, 3, dtype=torch.uint8)
    for t in range(count):
        frames[t, 0, 0] = torch.tensor([t, 100 + t, 200 - t])  # R, G, B
    return frames


def test_windows_take_five_frames_and_twenty_mfcc_columns():
    """evaluate()'s windows: min(frames, samples // 640) − 5 of them, window i = frames i..i+4 (fed BGR, 0..255)
    and MFCC columns 4i..4i+19."""
    frames = _marked_frames(30)
    cc = np.zeros((13, 200))
    cc[0] = np.arange(200)
    samples = 640 * 24 + 100  # 24 frames of sound: 19 windows
    assert window_count(30, 200, samples) == 19
    lip, aud = embed(_Probe(), frames, cc, samples=samples, batch_size=4)
    assert lip.shape == (19, 15) and aud.shape == (19, 20)
    for i in range(19):
        t = torch.arange(i, i + 5, dtype=torch.float32)
        assert torch.equal(lip[i], torch.cat([200 - t, 100 + t, t]))  # B, G, R, each over the five frames
        assert torch.equal(aud[i], torch.arange(4 * i, 4 * i + 20, dtype=torch.float32))
    # the same windows from floats in 0..1, already-BGR frames, grey frames and any batch size
    as_float = embed(_Probe(), frames.float() / 255, cc, samples=samples)[0]
    assert torch.allclose(as_float, lip, atol=1e-4)
    assert torch.equal(embed(_Probe(), frames.flip(-1), cc, samples=samples, bgr=True)[0], lip)
    assert torch.equal(embed(_Probe(), frames.numpy()[..., ::-1], cc, samples=samples, bgr=True)[0], lip)
    grey = embed(_Probe(), frames[..., 0], cc, samples=samples)[0]
    assert torch.equal(grey, torch.cat([torch.arange(i, i + 5).float().repeat(3)[None] for i in range(19)]))
    # without a sample count: as many frames as the MFCCs cover (200 columns → 51 frames; 30 frames of video)
    assert window_count(30, 200) == 25 and len(embed(_Probe(), frames, cc)[0]) == 25


def test_score_runs_the_full_network_on_six_frames():
    """Six frames is the least evaluate() scores (one window); the result is that of embed + score_embeddings."""
    torch.manual_seed(0)
    net = SyncNet().eval()
    frames = torch.randint(0, 256, (6, 224, 224, 3), dtype=torch.uint8)
    cc = np.random.default_rng(0).standard_normal((13, 24)) * 10
    result = score(net, frames, cc, samples=6 * 640, vshift=2)
    lip, aud = embed(net, frames, cc, samples=6 * 640)
    assert result.windows == 1 and lip.shape == aud.shape == (1, 1024)
    again = score_embeddings(lip, aud, 2)
    assert (result.offset, result.sync_c, result.sync_d) == (again.offset, again.sync_c, again.sync_d)
    # one window: the audio at offset 0 is its own, the others zeros
    assert result.mean_distances.shape == (5,)


def test_bad_inputs_are_refused_plainly():
    net = _Probe()
    cc = np.zeros((13, 400))
    with pytest.raises(ValueError, match="Too short to score.*at least 6 frames"):
        embed(net, _marked_frames(5), cc)
    with pytest.raises(ValueError, match="Too short to score"):
        embed(net, _marked_frames(20), cc, samples=5 * 640 + 639)
    with pytest.raises(ValueError, match="224×224 pixels; got 112×112"):
        embed(net, torch.zeros(10, 112, 112, 3, dtype=torch.uint8), cc)
    with pytest.raises(ValueError, match=r"\[frames, 224, 224, 3\]"):
        embed(net, torch.zeros(10, 224, 224, 4, dtype=torch.uint8), cc)
    with pytest.raises(ValueError, match=r"\[frames, 224, 224, 3\]"):
        embed(net, torch.zeros(224, 224), cc)
    with pytest.raises(ValueError, match="uint8 .* or floats"):
        embed(net, torch.zeros(10, 224, 224, 3, dtype=torch.int32), cc)
    with pytest.raises(ValueError, match=r"MFCCs \[13, frames\]"):
        embed(net, _marked_frames(10), cc.T)
    with pytest.raises(ValueError, match="shorter than the sound"):
        embed(net, _marked_frames(10), cc[:, :20], samples=10 * 640)
    with pytest.raises(ValueError, match="batch_size"):
        embed(net, _marked_frames(10), cc, batch_size=0)
    with pytest.raises(ValueError, match="vshift must be 0 or more"):
        score_embeddings(torch.zeros(3, 4), torch.zeros(3, 4), -1)
    with pytest.raises(ValueError, match="alike"):
        score_embeddings(torch.zeros(3, 4), torch.zeros(4, 4), 2)
