"""The whisper-tiny front end (EchoMimic's audio features) against an independent float64
computation written here from the formulas: own log-mel, own Slaney filter bank, own encoder."""

import math

import numpy as np
import pytest
import torch

from emo_pipeline.audio.whisper import WhisperAudioEncoder, frame_tokens, save_whisper
from emo_pipeline.io.loading import CheckpointError, CheckpointReader

DIMS = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6, "n_audio_layer": 4,
        "n_vocab": 51865, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 4}


# ---- an openai-whisper tiny.pt with random weights ---------------------------------------------

def sinusoid_table(length: int, channels: int) -> torch.Tensor:
    half = channels // 2
    rates = torch.exp(-math.log(10000) / (half - 1) * torch.arange(half, dtype=torch.float64))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * rates[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def random_whisper_state(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    d, mels, ctx = DIMS["n_audio_state"], DIMS["n_mels"], DIMS["n_audio_ctx"]

    def rand(*shape, scale):
        return torch.randn(*shape, generator=gen) * scale

    state = {
        "encoder.conv1.weight": rand(d, mels, 3, scale=(3 * mels) ** -0.5), "encoder.conv1.bias": rand(d, scale=0.1),
        "encoder.conv2.weight": rand(d, d, 3, scale=(3 * d) ** -0.5), "encoder.conv2.bias": rand(d, scale=0.1),
        "encoder.positional_embedding": sinusoid_table(ctx, d),
        "encoder.ln_post.weight": 1 + rand(d, scale=0.1), "encoder.ln_post.bias": rand(d, scale=0.1),
    }
    for n in range(DIMS["n_audio_layer"]):
        p = f"encoder.blocks.{n}."
        for name in ("query", "key", "value", "out"):
            state[p + f"attn.{name}.weight"] = rand(d, d, scale=d ** -0.5)
            if name != "key":  # whisper's key projection has no bias
                state[p + f"attn.{name}.bias"] = rand(d, scale=0.1)
        for ln in ("attn_ln", "mlp_ln"):
            state[p + f"{ln}.weight"] = 1 + rand(d, scale=0.1)
            state[p + f"{ln}.bias"] = rand(d, scale=0.1)
        state[p + "mlp.0.weight"], state[p + "mlp.0.bias"] = rand(4 * d, d, scale=d ** -0.5), rand(4 * d, scale=0.1)
        state[p + "mlp.2.weight"], state[p + "mlp.2.bias"] = rand(d, 4 * d, scale=(4 * d) ** -0.5), rand(d, scale=0.1)
    # A token of the decoder, so that the file is shaped like tiny.pt without its size.
    state["decoder.token_embedding.weight"] = rand(4, d, scale=0.02)
    state["decoder.ln.weight"] = torch.ones(d)
    return {k: v.half() for k, v in state.items()}  # openai's files are float16


def write_tiny_pt(path, state, dims=DIMS):
    torch.save({"dims": dict(dims), "model_state_dict": state}, path)
    return path


@pytest.fixture(scope="module")
def whisper_file(tmp_path_factory):
    state = random_whisper_state()
    return write_tiny_pt(tmp_path_factory.mktemp("whisper") / "whisper_tiny.pt", state), state


@pytest.fixture(scope="module")
def encoder(whisper_file):
    return WhisperAudioEncoder.from_file(whisper_file[0])


# ---- the reference, float64, from the formulas ------------------------------------------------

def slaney_mel_bank(sr=16000, n_fft=400, n_mels=80) -> np.ndarray:
    """librosa's mel filters (Slaney scale and area normalisation), [n_mels, n_fft/2+1]."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-12) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m):
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    bins = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    bank = np.zeros((n_mels, bins.size))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        rising, falling = (bins - lo) / (mid - lo), (hi - bins) / (hi - mid)
        bank[m] = np.maximum(0, np.minimum(rising, falling)) * 2.0 / (hi - lo)
    return bank


def reference_log_mel(audio: np.ndarray) -> np.ndarray:
    n_fft, hop = 400, 160
    padded = np.pad(audio.astype(np.float64), n_fft // 2, mode="reflect")
    count = 1 + (padded.size - n_fft) // hop
    frames = np.stack([padded[i * hop:i * hop + n_fft] for i in range(count)])[:-1]  # whisper drops the last
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    log_spec = np.log10(np.maximum(slaney_mel_bank() @ power.T, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def conv1d(x, weight, bias, stride):
    """x [C, T], weight [O, C, 3], padding 1."""
    cols = torch.nn.functional.pad(x, (1, 1)).unfold(1, 3, stride)  # [C, T_out, 3]
    return torch.einsum("ock,ctk->ot", weight, cols) + bias[:, None]


def layer_norm(x, weight, bias):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * weight + bias


def reference_states(mel: torch.Tensor, w: dict) -> torch.Tensor:
    """One [80, 3000] segment → [1500, 5, 384]: block input and each block's output, before ln_post."""
    heads = DIMS["n_audio_head"]
    x = gelu(conv1d(mel, w["encoder.conv1.weight"], w["encoder.conv1.bias"], 1))
    x = gelu(conv1d(x, w["encoder.conv2.weight"], w["encoder.conv2.bias"], 2)).T + w["encoder.positional_embedding"]
    states = [x]
    for n in range(DIMS["n_audio_layer"]):
        p = f"encoder.blocks.{n}."
        h = layer_norm(x, w[p + "attn_ln.weight"], w[p + "attn_ln.bias"])
        q = h @ w[p + "attn.query.weight"].T + w[p + "attn.query.bias"]
        k = h @ w[p + "attn.key.weight"].T
        v = h @ w[p + "attn.value.weight"].T + w[p + "attn.value.bias"]
        t, d = q.shape
        scale = (d // heads) ** -0.25
        q, k, v = (z.reshape(t, heads, -1).transpose(0, 1) for z in (q, k, v))
        attn = torch.softmax((q * scale) @ (k * scale).transpose(1, 2), dim=-1) @ v
        x = x + attn.transpose(0, 1).reshape(t, d) @ w[p + "attn.out.weight"].T + w[p + "attn.out.bias"]
        h = layer_norm(x, w[p + "mlp_ln.weight"], w[p + "mlp_ln.bias"])
        h = gelu(h @ w[p + "mlp.0.weight"].T + w[p + "mlp.0.bias"])
        x = x + h @ w[p + "mlp.2.weight"].T + w[p + "mlp.2.bias"]
        states.append(x)
    return torch.stack(states, dim=1)


def reference_features(audio: torch.Tensor, state: dict) -> torch.Tensor:
    w = {k: v.double() for k, v in state.items() if k.startswith("encoder.")}
    mel = torch.from_numpy(reference_log_mel(audio.numpy()))
    parts = []
    for seek in range(0, mel.shape[1], 3000):
        end = min(seek + 3000, mel.shape[1])
        segment = torch.zeros(80, 3000, dtype=torch.float64)
        segment[:, :end - seek] = mel[:, seek:end]
        parts.append(reference_states(segment, w)[:(end - seek) // 2])
    return torch.cat(parts)


def test_own_slaney_bank_is_sane():
    # The reference's own bank (it matched librosa's mel_filters.npz to 2e-9 when written): 80 non-empty filters.
    bank = slaney_mel_bank()
    assert bank.shape == (80, 201) and (bank >= 0).all() and (bank.max(axis=1) > 0).all()


def random_audio(seconds: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    n = int(seconds * 16000)
    t = torch.arange(n) / 16000
    audio = 0.1 * torch.randn(n, generator=gen) * (0.6 + 0.4 * torch.sin(2 * math.pi * 3 * t))
    audio[n // 3:n // 3 + 8000] = 0  # half a second of silence: the floor at max − 8 is used
    return audio


@pytest.mark.parametrize("seconds, length", [(3.013, 150), (35.0, 1750)])
def test_features_match_reference(encoder, whisper_file, seconds, length):
    audio = random_audio(seconds, seed=int(seconds))
    ours = encoder.features(audio)
    assert ours.shape == (length, 5, 384) and ours.dtype == torch.float32
    assert (encoder.layers, encoder.dim) == (5, 384)
    ref = reference_features(audio, whisper_file[1])
    assert ref.shape == ours.shape
    for layer in range(5):
        err = (ours[:, layer].double() - ref[:, layer]).abs().max().item()
        assert err <= 1e-4 * ref[:, layer].abs().max().item(), (layer, err)


def test_short_audio_is_refused(encoder):
    assert encoder.features(torch.zeros(320)).shape == (1, 5, 384)
    with pytest.raises(ValueError, match="too short"):
        encoder.features(torch.zeros(319))


# ---- per-frame windows ------------------------------------------------------------------------

def loop_tokens(features: torch.Tensor, num_frames: int, fps: float) -> torch.Tensor:
    rows = []
    last = features.shape[0] - 1
    for i in range(num_frames):
        centre = int(i * 50 / fps)
        window = [features[min(max(j, 0), last)] for j in range(centre - 4, centre + 6)]
        rows.append(torch.cat(window, dim=0))
    return torch.stack(rows)


@pytest.mark.parametrize("fps", [24, 25, 29.97, 30.0])
@pytest.mark.parametrize("length", [1, 3, 9, 150])
def test_frame_tokens_match_loop(fps, length):
    features = torch.randn(length, 5, 8, generator=torch.Generator().manual_seed(length))
    num_frames = math.ceil(length * fps / 50) + 3  # runs past the audio's end: clamping on the right
    ours = frame_tokens(features, num_frames, fps)
    assert ours.shape == (num_frames, 50, 8)
    assert torch.equal(ours, loop_tokens(features, num_frames, fps))
    assert frame_tokens(features, 0, fps).shape == (0, 50, 8)


def test_frame_tokens_refuses_empty_features():
    with pytest.raises(ValueError):
        frame_tokens(torch.zeros(0, 5, 384), 3, 25)


# ---- loading ----------------------------------------------------------------------------------

@pytest.mark.parametrize("change, named", [
    ("drop", "encoder.blocks.3.attn.key.weight"),
    ("add", "encoder.blocks.0.attn.key.bias"),
    ("reshape", "encoder.conv1.weight"),
])
def test_wrong_keys_raise(whisper_file, tmp_path, change, named):
    state = dict(whisper_file[1])
    if change == "drop":
        del state[named]
    elif change == "add":
        state[named] = torch.zeros(384, dtype=torch.float16)
    else:
        state[named] = torch.zeros(384, 128, 3, dtype=torch.float16)
    path = write_tiny_pt(tmp_path / "whisper_tiny.pt", state)
    with pytest.raises(CheckpointError) as err:
        WhisperAudioEncoder.from_file(path)
    message = str(err.value)
    assert named in message and "whisper_tiny.pt" in message and "audio_processor" in message


def test_not_a_whisper_file_raises(tmp_path):
    path = tmp_path / "net.pth"
    torch.save({"conv.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="openai-whisper"):
        WhisperAudioEncoder.from_file(path)
    no_dims = {k: v for k, v in DIMS.items() if k != "n_audio_head"}
    path = write_tiny_pt(tmp_path / "tiny.pt", random_whisper_state(), dims=no_dims)
    with pytest.raises(CheckpointError, match="n_audio_head"):
        WhisperAudioEncoder.from_file(path)


@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_safetensors_round_trip(encoder, whisper_file, tmp_path, dtype):
    target = save_whisper(encoder, tmp_path / "whisper_tiny.safetensors", dtype=dtype)
    with CheckpointReader(target) as reader:
        assert set(reader.keys()) == {k for k in whisper_file[1] if k.startswith("encoder.")}
        assert "whisper_dims" in reader.metadata
    again = WhisperAudioEncoder.from_file(target)
    assert again.dims == DIMS
    audio = random_audio(2.0, seed=7)
    # The source weights are float16, so storing them as float16 loses nothing either.
    assert torch.equal(again.features(audio), encoder.features(audio))
