"""EMO Sample To Video through the ComfyUI stubs: a cancelled run continues on the next Queue."""

import pytest
import torch

import comfy_stubs
from conftest import decoded_frames, speech_like
from emo_pipeline.io.media import read_video_info
from emo_pipeline.tiny import write_tiny_model_folder


class CancelAt(list):
    """ComfyUI's progress record, pressing Cancel when the bar reaches `value`."""

    def __init__(self, state, value):
        super().__init__()
        self.state, self.value = state, value

    def append(self, item):
        super().append(item)
        if item[0] == self.value:
            self.state.interrupted = True


def test_cancel_then_queue_again_continues_with_the_same_frames(tmp_path):
    write_tiny_model_folder(tmp_path / "models" / "emo")
    state = comfy_stubs.install(tmp_path / "models", tmp_path / "output")
    pack = comfy_stubs.load_pack()
    n = {k: cls() for k, cls in pack.NODE_CLASS_MAPPINGS.items()}
    model = n["LoadEMOModel"].load("tiny/net.safetensors", "auto", "auto")[0]
    calls = []
    model.pipeline.net.denoising_unet.register_forward_hook(lambda *_: calls.append(1))
    audio = {"waveform": speech_like(0.5)[None], "sample_rate": 16000}
    emo_audio, count, fps = n["EMOEncodeAudio"].encode(model, audio, 0.0)
    reference, _ = n["EMOReferenceNetEncode"].encode(model, torch.rand(1, 64, 64, 3))
    sampling = (model, reference, emo_audio, 0, 2, 3.5, 0, -1, "ddim")  # 13 frames: 4 clips of 2 steps
    full = n["EMOSampleToVideo"].render(*sampling, "EMO/full", 19, soundtrack=audio)["result"][1]
    assert len(calls) == 8 and not (tmp_path / "output" / "EMO" / ".full.emo-resume").exists()

    state.progress = CancelAt(state, 2 * 2 + 1)  # Cancel during clip 3
    with pytest.raises(comfy_stubs.InterruptProcessingException):
        n["EMOSampleToVideo"].render(*sampling, "EMO/long", 19, soundtrack=audio)
    kept = tmp_path / "output" / "EMO" / ".long.emo-resume"
    assert (kept / "manifest.json").is_file() and not list((tmp_path / "output" / "EMO").glob("long*.mp4"))

    calls.clear()
    state.progress, state.messages = [], []
    path = n["EMOSampleToVideo"].render(*sampling, "EMO/long", 19, soundtrack=audio)["result"][1]
    assert len(calls) == 2 * 2  # clips 3 and 4 only
    assert [p[0] for p in state.progress] == [5, 6, 7, 8]  # the bar continues where it was
    assert any("Resuming: 8 frames" in m["message"] for _, m in state.messages)
    assert torch.equal(decoded_frames(path), decoded_frames(full))
    info = read_video_info(path)
    assert info["frame_count"] == count == 13 and info["audio_duration"] == pytest.approx(13 / fps, abs=1e-3)
    assert not kept.exists()
