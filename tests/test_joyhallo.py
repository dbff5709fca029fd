"""JoyHallo's front end and a tiny JoyHallo on disk.

chinese-wav2vec2-base comes as a *pretraining* checkpoint (TencentGameMate's folder: config.json,
preprocessor_config.json with do_normalize false, pytorch_model.bin holding Wav2Vec2ForPreTraining's keys:
`wav2vec2.*` with the positional conv's weight_g / weight_v, and the quantizer and projection heads). Here a tiny
one with random weights is written in that layout and read by our loader (the pickle weights-only, its keys
mapped onto Wav2Vec2Model's and checked strictly, the samples not normalised); its features from a real WAV file
(read through PyAV) are compared with transformers' own front end on the same file: Wav2Vec2FeatureExtractor and
Wav2Vec2Model.from_pretrained on the folder (transformers' own key mapping), run as Hallo's and JoyHallo's
Wav2VecModel runs it (CNN features interpolated to the frame count before the transformer), with JoyHallo's
padding to whole clips. benchmarks/joyhallo_side_by_side.py --front-end does the same against JoyHallo's own
Wav2VecModel class.
"""

from __future__ import annotations

import json
import math
import wave

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining, Wav2Vec2Model

from emo_pipeline.audio.encoder import AudioEncoder
from emo_pipeline.components import load_pipeline
from emo_pipeline.config import tiny_config, tiny_joyhallo_config
from emo_pipeline.demo_inputs import speech_like_audio
from emo_pipeline.io.loading import CheckpointError
from emo_pipeline.io.media import load_audio
from emo_pipeline.io.model_files import audio_encoder_path
from emo_pipeline.pipeline import EMOPipeline
from emo_pipeline.sampling.steps import SamplingOptions
from emo_pipeline.tiny import randomize_, tiny_net, tiny_vae, tiny_wav2vec

FPS, CLIP, RATE = 25, 16, 16000


def chinese_like_config(hidden: int = 32, layers: int = 2, heads: int = 2) -> Wav2Vec2Config:
    """chinese-wav2vec2-base's layout (group-normed convs without bias, post-norm transformer), few channels."""
    return Wav2Vec2Config(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * hidden,
        conv_dim=(16,) * 7, conv_bias=False, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        feat_extract_norm="group", do_stable_layer_norm=False, codevector_dim=16, proj_codevector_dim=16,
        num_codevectors_per_group=8, architectures=["Wav2Vec2ForPreTraining"])


def pretraining_state(config: Wav2Vec2Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Wav2Vec2ForPreTraining's state dict with random weights, the positional conv's weight norm under the names
    of the 2021 file (weight_g, weight_v)."""
    torch.manual_seed(seed)
    model = randomize_(Wav2Vec2ForPreTraining(config).eval(), seed, scale=0.2)
    rename = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    state = {}
    for key, value in model.state_dict().items():
        for new, old in rename.items():
            key = key.replace(new, old)
        state[key] = value.detach().clone()
    return state


def write_chinese_wav2vec2(folder, config: Wav2Vec2Config | None = None, seed: int = 0, do_normalize: bool = False):
    """TencentGameMate/chinese-wav2vec2-base's folder, tiny."""
    config = config or chinese_like_config()
    folder.mkdir(parents=True, exist_ok=True)
    config.to_json_file(folder / "config.json")
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": do_normalize, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
        "padding_side": "right", "padding_value": 0.0, "return_attention_mask": False, "sampling_rate": RATE}))
    state = pretraining_state(config, seed)
    torch.save(state, folder / "pytorch_model.bin")
    return state


def write_wav(path, samples: torch.Tensor, rate: int = RATE):
    """16-bit PCM mono, as a recorded WAV file is."""
    pcm = (samples.clamp(-1, 1) * 32767).round().to(torch.int16).numpy()
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())
    return path


def read_wav(path) -> np.ndarray:
    """The file's samples as librosa.load gives a 16 kHz 16-bit file (soundfile: int16 / 32768, float32)."""
    with wave.open(str(path), "rb") as f:
        return np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16).astype(np.float32) / 32768


@torch.no_grad()
def reference_features(folder, wav_path) -> tuple[torch.Tensor, int]:
    """JoyHallo's AudioProcessor.preprocess (audio_processor.py) on transformers' own classes: its feature extractor
    from the folder's preprocessor_config.json, seq_len = ceil(seconds · 25), zeros to whole clips of 16 frames, then
    Wav2VecModel's forward (wav2vec.py: the CNN's features interpolated to seq_len before the transformer) and every
    layer's output stacked: [seq_len padded, layers, dim], and the unpadded frame count."""
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder)
    model = Wav2Vec2Model.from_pretrained(folder).eval()
    speech = read_wav(wav_path)
    values = np.squeeze(extractor(speech, sampling_rate=RATE).input_values)
    seq_len = math.ceil(len(values) / RATE * FPS)
    length = seq_len
    values = torch.from_numpy(values).float()
    if seq_len % CLIP:
        values = F.pad(values, (0, (CLIP - seq_len % CLIP) * (RATE // FPS)))
        seq_len += CLIP - seq_len % CLIP
    features = model.feature_extractor(values[None]).transpose(1, 2)
    features = F.interpolate(features.transpose(1, 2), size=seq_len, align_corners=True, mode="linear").transpose(1, 2)
    hidden, _ = model.feature_projection(features)
    # Wav2Vec2Encoder (post-norm, as chinese-wav2vec2-base): positional conv, layer norm, then the layers, each
    # layer's output one of hidden_states[1:]
    encoder = model.encoder
    hidden = encoder.layer_norm(hidden + encoder.pos_conv_embed(hidden))
    layers = []
    for layer in encoder.layers:
        hidden = layer(hidden)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        layers.append(hidden[0])
    return torch.stack(layers, dim=1), length


@pytest.fixture(scope="module")
def wav_file(tmp_path_factory):
    audio = speech_like_audio(2.3)[0] * 0.5  # 2.3 s: 58 frames, padded to 64 (4 clips)
    return write_wav(tmp_path_factory.mktemp("audio") / "speech.wav", audio)


def test_pretraining_checkpoint_is_read_weights_only_with_its_keys_mapped(tmp_path):
    folder = tmp_path / "chinese-wav2vec2-base"
    state = write_chinese_wav2vec2(folder)
    assert any(k.startswith("quantizer.") for k in state) and "wav2vec2.encoder.pos_conv_embed.conv.weight_g" in state
    encoder = AudioEncoder.from_pretrained(folder)
    assert encoder.normalize is False  # its preprocessor_config.json says so
    ours = encoder.model.state_dict()
    assert torch.equal(ours["encoder.pos_conv_embed.conv.parametrizations.weight.original1"],
                       state["wav2vec2.encoder.pos_conv_embed.conv.weight_v"])
    assert torch.equal(ours["feature_projection.projection.weight"], state["wav2vec2.feature_projection.projection.weight"])
    # a file missing one of the model's tensors is refused, naming it
    del state["wav2vec2.encoder.layers.1.final_layer_norm.bias"]
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="1 missing key.*encoder.layers.1.final_layer_norm.bias"):
        AudioEncoder.from_pretrained(folder)


def test_a_pickle_carrying_code_is_refused(tmp_path):
    folder = tmp_path / "chinese-wav2vec2-base"
    state = write_chinese_wav2vec2(folder)
    state["extra"] = torch.nn.Linear(2, 2)  # a pickled module: not a plain state dict of tensors
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="Refused|not a state dict"):
        AudioEncoder.from_pretrained(folder)


@torch.no_grad()
def test_features_match_transformers_own_front_end_on_a_wav_file(tmp_path, wav_file):
    folder = tmp_path / "chinese-wav2vec2-base"
    write_chinese_wav2vec2(folder)
    config = tiny_joyhallo_config()
    pipe = EMOPipeline(tiny_net(config), tiny_vae(), AudioEncoder.from_pretrained(folder))
    waveform, rate = load_audio(wav_file)  # PyAV
    assert rate == RATE
    ours = pipe.encode_audio(waveform, rate, clip_length=CLIP)  # JoyHallo's 16-frame clips (the tiny model's are 4)
    reference, length = reference_features(folder, wav_file)
    assert ours.num_frames == length == 58 and ours.features.shape == reference.shape == (64, 2, 32)
    error = (ours.features - reference).abs().max() / reference.abs().max()
    assert error < 1e-5, error
    # the same model with its samples normalised (wav2vec2-base-960h's extractor) hears something else
    pipe.audio_encoder.normalize = True
    normalised = pipe.encode_audio(waveform, rate, clip_length=CLIP)
    assert (normalised.features - reference).abs().max() / reference.abs().max() > 1e-2


@torch.no_grad()
def test_one_file_as_comfyui_audio_encoders_keeps_it(tmp_path, wav_file):
    """A single safetensors file without config (ComfyUI's models/audio_encoders): the shapes give the config, the
    family gives the normalisation; its keys under the pretraining names or under transformers' names today."""
    config = chinese_like_config(hidden=64, heads=1)  # a head count the shapes can tell: 64 wide
    folder = tmp_path / "chinese-wav2vec2-base"
    state = write_chinese_wav2vec2(folder, config)
    from_folder = AudioEncoder.from_pretrained(folder)
    speech = torch.from_numpy(read_wav(wav_file))
    expected = from_folder(speech, 40)
    as_shipped = tmp_path / "wav2vec2-chinese-base_fp16.safetensors"
    save_file({k: v.half().contiguous() for k, v in state.items()}, as_shipped)
    plain = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in from_folder.model.state_dict().items()}, plain)
    for path, tolerance in ((as_shipped, 2e-2), (plain, 1e-6)):
        encoder = AudioEncoder.from_pretrained(path, normalize=False)
        assert encoder.normalize is False and encoder.model.config.hidden_size == 64
        got = encoder(speech, 40)
        assert (got - expected).abs().max() / expected.abs().max() < tolerance, path.name
    assert AudioEncoder.from_pretrained(plain).normalize is True  # no family: wav2vec2-base-960h's


def write_tiny_joyhallo(root, seed: int = 0):
    """A tiny JoyHallo download in our layout: joyhallo/net.pth (its own keys), vae/, chinese-wav2vec2-base/."""
    config = tiny_joyhallo_config(name="joyhallo")
    (root / "joyhallo").mkdir(parents=True)
    torch.save(tiny_net(config, seed).state_dict(), root / "joyhallo" / "net.pth")
    tiny_vae(seed).save_pretrained(root / "vae")
    write_chinese_wav2vec2(root / "chinese-wav2vec2-base", seed=seed)
    return config


@torch.no_grad()
def test_tiny_joyhallo_loads_with_its_front_end_and_renders(tmp_path, wav_file, monkeypatch):
    from emo_pipeline.io import loading

    monkeypatch.setattr(loading, "hallo_config", lambda: tiny_config(name="hallo"))
    config = write_tiny_joyhallo(tmp_path)
    monkeypatch.setattr(loading, "joyhallo_config", lambda: config)
    assert audio_encoder_path(tmp_path / "joyhallo" / "net.pth", config) == tmp_path / "chinese-wav2vec2-base"
    pipe = load_pipeline(tmp_path / "joyhallo")
    assert pipe.config.family == "joyhallo" and pipe.audio_encoder.normalize is False
    waveform, rate = load_audio(wav_file)
    audio = pipe.encode_audio(waveform[:, :rate // 2], rate)  # its first half second: 13 frames
    portrait = pipe.prepare_portrait(torch.rand(64, 64, 3), face_box=(0.3, 0.25, 0.7, 0.75))
    video = pipe.generate(portrait, audio, SamplingOptions(seed=0, steps=2))
    assert video.shape == (13, 64, 64, 3) and torch.isfinite(video).all()
    # the Mandarin wav2vec2 kept where ComfyUI core keeps it (models/audio_encoders): found there as a last resort
    (tmp_path / "chinese-wav2vec2-base" / "config.json").unlink()
    shared = tmp_path / "audio_encoders"
    shared.mkdir()
    (shared / "wav2vec2-chinese-base_fp16.safetensors").write_bytes(b"")
    assert audio_encoder_path(tmp_path / "joyhallo" / "net.pth", config, (shared,)) == \
        shared / "wav2vec2-chinese-base_fp16.safetensors"


@torch.no_grad()
def test_a_hallo_network_with_its_three_attentions_alike_renders_joyhallo_s_frames():
    """The switch end to end: JoyHallo's tiny network and Hallo's with attn2_1 and attn2_2 set to copies of its
    attn2_0 give the same video (guidance's silent rows included), at every preset."""
    joy = tiny_net(tiny_joyhallo_config(), seed=3)  # every weight random, the zero convs too
    state = joy.state_dict()
    state.update({k.replace(".attn2_0.", f".{name}."): v for k, v in joy.state_dict().items() if ".attn2_0." in k
                  for name in ("attn2_1", "attn2_2")})
    hallo = tiny_net(tiny_config(), seed=4)
    hallo.load_state_dict(state, strict=True)
    portrait = torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(1))
    speech = speech_like_audio(0.3)  # 8 frames: two clips, the second continuing from the first
    for preset in ("quality", "fast"):
        videos = []
        for net in (joy, hallo):
            pipe = EMOPipeline(net, tiny_vae(1), AudioEncoder(tiny_wav2vec(1)))
            p = pipe.prepare_portrait(portrait, face_box=(0.3, 0.25, 0.7, 0.75))
            videos.append(pipe.generate(p, pipe.encode_audio(speech, RATE), SamplingOptions(seed=2, preset=preset,
                                                                                            steps=3)))
        torch.testing.assert_close(videos[0], videos[1], rtol=0, atol=1e-5)


def test_full_size_flops_and_memory_follow_hallo_less_two_attentions():
    """Counted on meta and fake tensors: JoyHallo's sampling costs a little less than Hallo's (its conditional rows
    run one audio attention instead of three; the unconditional rows, silent, run none in either), its presets
    scale as Hallo's, and every memory mode's counted peak is below Hallo's."""
    from emo_pipeline.config import hallo_config, joyhallo_config
    from emo_pipeline.cost import full_size_pipeline, video_flops
    from emo_pipeline.memory_plan import counted_peak, needed, plan_memory

    costs = {}
    for name, config in (("hallo", hallo_config()), ("joyhallo", joyhallo_config())):
        pipe = full_size_pipeline(config)
        costs[name] = {preset: video_flops(pipe, SamplingOptions(preset=preset), 2.0)
                       for preset in ("quality", "balanced", "fast")}
    joy, hallo = costs["joyhallo"], costs["hallo"]
    assert 0.98 < joy["quality"].total / hallo["quality"].total < 1
    assert joy["quality"].stages["denoiser, unconditional rows"] == hallo["quality"].stages["denoiser, unconditional rows"]
    assert joy["quality"].stages["denoiser, conditional rows"] < hallo["quality"].stages["denoiser, conditional rows"]
    assert 0.45 < joy["balanced"].total / joy["quality"].total < 0.55
    assert joy["fast"].total < joy["quality"].total / 3
    peaks = {}
    for mode in ("normal", "low_vram_fp8"):
        peaks[mode] = counted_peak(joyhallo_config(), SamplingOptions(), torch.float16, mode, 8)
        assert peaks[mode] < counted_peak(hallo_config(), SamplingOptions(), torch.float16, mode, 8)
    plan = plan_memory(joyhallo_config(), needed(peaks["normal"]), torch.float16)
    assert plan.mode == "normal" and plan.counted == peaks["normal"]
    plan = plan_memory(joyhallo_config(), needed(peaks["low_vram_fp8"]), torch.float16)
    assert plan.mode == "low_vram_fp8"


def test_comfyui_lists_joyhallo_and_finds_its_wav2vec2_where_core_keeps_it(tmp_path, monkeypatch):
    """Load EMO Model: joyhallo/net.pth is listed (the Mandarin wav2vec2's pytorch_model.bin is not), the download
    entry is offered, and with no chinese-wav2vec2-base folder beside it the file in ComfyUI's models/audio_encoders
    (as core's audio encoder loader keeps it) is what it loads, unnormalised."""
    import sys

    import comfy_stubs
    import tiny_families

    models = tmp_path / "models"
    write_tiny_joyhallo(models / "emo")
    from_folder = AudioEncoder.from_pretrained(models / "emo" / "chinese-wav2vec2-base")
    (models / "audio_encoders").mkdir()
    save_file({f"wav2vec2.{k}": v.half().contiguous() for k, v in from_folder.model.state_dict().items()},
              models / "audio_encoders" / "wav2vec2-chinese-base_fp16.safetensors")
    # 32 wide: no head count its shapes can tell, so its config beside it (the real one's 768 needs none)
    from_folder.model.config.to_json_file(models / "audio_encoders" / "wav2vec2-chinese-base_fp16.json")
    comfy_stubs.install(models, tmp_path / "output")
    pack = comfy_stubs.load_pack()
    tiny_families.install(monkeypatch, sys.modules[pack.__name__ + ".emo_pipeline.io.loading"],
                          sys.modules[pack.__name__ + ".emo_pipeline.download.checks"])
    loader = pack.NODE_CLASS_MAPPINGS["LoadEMOModel"]
    listed = loader.INPUT_TYPES()["required"]["checkpoint"][0]
    assert [c for c in listed if not c.startswith(("download: ", "demo/"))] == ["joyhallo/net.pth"]  # demo: bundled
    assert any(c.startswith("download: joyhallo ") for c in listed)
    import shutil

    shutil.rmtree(models / "emo" / "chinese-wav2vec2-base")
    model = loader().load("joyhallo/net.pth", "auto", "cpu")[0]
    assert model.pipeline.config.family == "joyhallo" and model.pipeline.audio_encoder.normalize is False
    speech = torch.from_numpy(read_wav(write_wav(tmp_path / "s.wav", speech_like_audio(0.4)[0] * 0.5)))
    got, expected = model.pipeline.audio_encoder(speech, 10), from_folder(speech, 10)
    assert (got - expected).abs().max() / expected.abs().max() < 2e-2  # the fp16 file
