"""`download joyhallo` from a hub on 127.0.0.1 (tests/local_hub.py) serving tiny files under JoyHallo's real
repositories and paths: its net.pth (jdh-algo/JoyHallo-v1), Hallo's base files (fudan-generative-ai/hallo) and
TencentGameMate/chinese-wav2vec2-base; exactly the files its loader reads are placed (none of the others those
repositories hold is asked for), the Mandarin wav2vec2 is checked as its pretraining checkpoint before placing, and
the placed model renders through the command line."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_families
from local_hub import serving
from emo_pipeline.config import tiny_joyhallo_config
from emo_pipeline.demo_inputs import speech_like_audio
from emo_pipeline.download import DOWNLOADS, DownloadError, download
from emo_pipeline.download.fetch import STATE
from emo_pipeline.tiny import tiny_net, tiny_vae
from test_face import arcface_model, scrfd_model
from test_joyhallo import chinese_like_config, write_chinese_wav2vec2, write_wav

JOY, HALLO, CHINESE = "jdh-algo/JoyHallo-v1", "fudan-generative-ai/hallo", "TencentGameMate/chinese-wav2vec2-base"
# What the repositories hold besides: never asked for.
UNREAD = {
    JOY: ["README.md"],
    HALLO: ["hallo/net.pth", "wav2vec/wav2vec2-base-960h/config.json", "wav2vec/wav2vec2-base-960h/model.safetensors",
            "motion_module/mm_sd_v15_v2.ckpt", "audio_separator/Kim_Vocal_2.onnx"],
    CHINESE: ["chinese-wav2vec2-base-fairseq-ckpt.pt", "README.md"],
}


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def repositories(tmp_path_factory):
    work = tmp_path_factory.mktemp("joyhallo-repos")
    buffer = io.BytesIO()
    torch.save(tiny_net(tiny_joyhallo_config(name="joyhallo"), seed=2).state_dict(), buffer)
    tiny_vae(2).save_pretrained(work / "vae")
    write_chinese_wav2vec2(work / "chinese", chinese_like_config(), seed=2)
    face = work / "face"
    face.mkdir()
    scrfd_model(face / "scrfd_10g_bnkps.onnx")
    arcface_model(face / "glintr100.onnx", np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32))
    repos = {JOY: {"net.pth": buffer.getvalue()},
             HALLO: {f"sd-vae-ft-mse/{k}": v for k, v in _tree(work / "vae").items()}
             | {f"face_analysis/models/{k}": v for k, v in _tree(face).items()},
             CHINESE: _tree(work / "chinese")}
    for repo, paths in UNREAD.items():
        for path in paths:
            repos[repo][path] = b"never read by our loaders " + path.encode()
    return repos


@pytest.fixture
def hub(repositories, monkeypatch):
    tiny_families.install(monkeypatch)
    with serving(repositories, monkeypatch) as server:
        yield server


def test_joyhallo_places_exactly_the_files_its_loader_reads_and_renders(hub, repositories, tmp_path):
    models = tmp_path / "models" / "emo"
    result = download(["joyhallo"], models)
    placed = {k: v for k, v in _tree(models).items() if not k.startswith(STATE + "/")}
    expected = {f.target: repositories[f.repo][f.path] for f in DOWNLOADS["joyhallo"].files}
    assert placed == expected  # these files, these bytes, nothing else
    assert sorted(placed) == sorted(["joyhallo/net.pth", "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
                                     "chinese-wav2vec2-base/config.json", "chinese-wav2vec2-base/preprocessor_config.json",
                                     "chinese-wav2vec2-base/pytorch_model.bin", "face_analysis/models/scrfd_10g_bnkps.onnx",
                                     "face_analysis/models/glintr100.onnx"])
    unread = {f"/{repo}/resolve/main/{p}" for repo, paths in UNREAD.items() for p in paths}
    assert not unread & set(hub.content_gets())

    from emo_pipeline.cli import main
    from emo_pipeline.components import load_pipeline
    from emo_pipeline.io.media import read_video_info

    pipe = load_pipeline(models / "joyhallo")
    assert pipe.config.family == "joyhallo" and pipe.audio_encoder.normalize is False
    out = tmp_path / "video.mp4"
    audio = write_wav(tmp_path / "speech.wav", speech_like_audio(0.5)[0] * 0.5)
    assert main(["generate", "--model", str(models / "joyhallo"), "--out", str(out), "--steps", "2",
                 "--audio", str(audio)]) == 0
    assert read_video_info(out)["frame_count"] == int(np.ceil(0.5 * 25))


def test_a_wav2vec2_that_does_not_fit_its_config_is_not_placed(hub, repositories, tmp_path):
    state = torch.load(io.BytesIO(repositories[CHINESE]["pytorch_model.bin"]), weights_only=True)
    state["wav2vec2.encoder.layers.0.attention.k_proj.weight"] = torch.zeros(3, 3)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    hub.add(CHINESE, "pytorch_model.bin", buffer.getvalue())
    hub.refresh()
    models = tmp_path / "emo"
    with pytest.raises(DownloadError, match="chinese-wav2vec2-base.*pytorch_model.bin does not fit its config.json"):
        download(["joyhallo"], models)
    assert not (models / "chinese-wav2vec2-base").exists()
