"""EMO Upscale Face Video through ComfyUI's stubs, on real tiny net_g.pth / RealESRGAN files in models/emo."""

import pytest
import torch

import comfy_stubs
from conftest import decoded_frames, speech_like
from emo_pipeline.io.media import read_video_info
from emo_pipeline.tiny import write_tiny_model_folder
from emo_pipeline.upscale.codeformer import TemporalCodeFormer, tiny_codeformer_config
from emo_pipeline.upscale.rrdbnet import RRDBNet, tiny_rrdb_config


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    models, output = tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("output")
    torch.manual_seed(0)
    (models / "emo" / "hallo2").mkdir(parents=True)
    (models / "emo" / "realesrgan").mkdir()
    torch.save({"params_ema": TemporalCodeFormer(tiny_codeformer_config()).state_dict()},
               models / "emo" / "hallo2" / "net_g.pth")
    torch.save({"params_ema": RRDBNet(tiny_rrdb_config()).state_dict()},
               models / "emo" / "realesrgan" / "RealESRGAN_x2plus.pth")
    write_tiny_model_folder(models / "emo")
    state = comfy_stubs.install(models, output)
    pack = comfy_stubs.load_pack()
    return pack, state, models


@pytest.fixture
def node(env, monkeypatch):
    pack = env[0]
    module = __import__(pack.__name__ + ".nodes.upscale", fromlist=["x"])
    monkeypatch.setattr(module, "CODEFORMER_CONFIG", tiny_codeformer_config())  # the files hold tiny networks
    monkeypatch.setattr(module, "RRDB_CONFIG", tiny_rrdb_config())
    return pack.NODE_CLASS_MAPPINGS["EMOUpscaleFaceVideo"](), module


def test_node_upscales_every_frame_with_progress(env, node):
    upscale, _ = node
    state = env[1]
    state.progress.clear()
    frames = torch.rand(18, 48, 48, 3)
    (out,) = upscale.upscale(frames, 2, 0.5, "realesrgan", "linear")
    assert out.shape == (18, 96, 96, 3) and out.dtype == torch.float32
    assert [p[0] for p in state.progress] == list(range(1, 19)) and state.progress[-1][1] == 18
    (same,) = upscale.upscale(frames[:3], 1, 0.5)
    assert same.shape == (3, 48, 48, 3)


def test_node_cancel_stops_between_frames(env, node):
    upscale, _ = node
    state = env[1]
    state.progress.clear()
    state.interrupted = True
    with pytest.raises(comfy_stubs.InterruptProcessingException):
        upscale.upscale(torch.rand(20, 32, 32, 3), 2, 0.5)
    assert len(state.progress) == 1  # stopped at the first cancel point


def test_node_bad_input_and_missing_files_say_the_fix(env, node, monkeypatch):
    upscale, module = node
    with pytest.raises(ValueError, match=r"IMAGE frames \[F, H, W, 3\]"):
        upscale.upscale(torch.rand(0, 32, 32, 3), 2, 0.5)
    with pytest.raises(ValueError, match="upscale must be 1, 2, 3 or 4"):
        upscale.upscale(torch.rand(1, 32, 32, 3), 5, 0.5)
    monkeypatch.setattr(module.folder_paths, "get_folder_paths", lambda name: [str(env[2] / "nowhere")])
    with pytest.raises(FileNotFoundError, match="download hallo2-upscaler"):
        upscale.upscale(torch.rand(1, 32, 32, 3), 2, 0.5)


def test_sample_to_video_upscales_as_the_node_does(env, node):
    """EMO Sample To Video with upscale 2 writes what EMO Sampler -> EMO Upscale Face Video -> EMO Video Combine
    writes, streaming chunk by chunk."""
    pack, _, _ = env
    upscale, _ = node
    n = {k: cls() for k, cls in pack.NODE_CLASS_MAPPINGS.items()}
    model = n["LoadEMOModel"].load("tiny/net.safetensors", "auto", "auto")[0]
    audio = {"waveform": speech_like(0.8)[None], "sample_rate": 16000}
    emo_audio, count, fps = n["EMOEncodeAudio"].encode(model, audio, "model default")
    reference, _ = n["EMOReferenceNetEncode"].encode(model, torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(5)))
    sampling = (model, reference, emo_audio, 3, 1, 2.0, "custom", "ddim")
    (frames,) = n["EMOSampler"].sample(*sampling)["result"]
    (big,) = upscale.upscale(frames, 2, 0.7)
    combined = n["EMOVideoCombine"].combine(big, fps, "EMO/pair", 19, audio=audio)
    streamed = n["EMOSampleToVideo"].render(*sampling, "EMO/stream", 19, soundtrack=audio, upscale=2,
                                            upscale_fidelity=0.7)
    info = read_video_info(streamed["result"][1])
    assert (info["width"], info["height"], info["frame_count"]) == (128, 128, count)
    assert torch.equal(decoded_frames(streamed["result"][1]), decoded_frames(combined["result"][1]))
