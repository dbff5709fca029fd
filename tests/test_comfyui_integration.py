"""Runs the pack inside a real ComfyUI (only when COMFYUI_PATH points to a checkout).

    COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python python -m pytest -q tests -k comfyui

ComfyUI starts on the CPU on a free loopback port with the pack mounted through
--extra-model-paths-config; an image and an audio file are uploaded, the API-format basic
workflow is posted with a tiny checkpoint, and the MP4 it writes is checked.
"""

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from comfy_stubs import ROOT
from conftest import cpu_seconds, machine_slowness, speech_like

COMFYUI = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI, reason="set COMFYUI_PATH to a ComfyUI checkout to run")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 30) -> dict:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout * machine_slowness()) as response:
        return json.loads(response.read())


def wait_for(what: str, check, server: subprocess.Popen, log: Path, bound: float):
    """check()'s first result that is not None, asked again as soon as the last answer came: the test waits
    on the event itself. A request the busy server is slow to answer is asked again, not a failure. The
    bound (scaled by the machine's measured speed) only catches a server that hangs or died: once it has
    passed, a server still spending CPU time is working (a loaded machine) and gets the bound again, up to
    12 times; one that spent none has hung."""
    deadline = time.monotonic() + bound * machine_slowness()
    spent, extensions = cpu_seconds(server.pid), 0
    slow_answers = 0
    while True:
        try:
            result = check()
            if result is not None:
                return result
        except (ConnectionError, urllib.error.URLError, TimeoutError) as err:
            slow_answers += isinstance(err, TimeoutError) or isinstance(getattr(err, "reason", None), TimeoutError)
        assert server.poll() is None, f"ComfyUI ended while waiting for {what}: " + log.read_text()[-3000:]
        if time.monotonic() >= deadline:
            now = cpu_seconds(server.pid)
            assert spent is not None and now is not None and now > spent + 0.05 and extensions < 12, (
                f"{what}: not within {bound * machine_slowness():.0f} s, and the server "
                f"{'spent no CPU time in it' if extensions < 12 else 'is past 12 such bounds'} "
                f"({slow_answers} requests timed out)\n" + log.read_text()[-3000:])
            spent, extensions, deadline = now, extensions + 1, time.monotonic() + bound * machine_slowness()
        time.sleep(0.2)


def upload(base: str, path: Path) -> str:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{path.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    reply = request(f"{base}/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    return reply["name"]


# The low-VRAM case also sets the sampler's fast preset and fp8 weight storage on the loader.
LOW_VRAM_FAST = {"3": {"memory_mode": "low_vram", "weight_storage": "fp8_e4m3fn"}, "6": {"preset": "fast"}}


# wav2vec2 from ComfyUI's models/audio_encoders, as a core-style single file (see write_core_wav2vec).
CORE_WAV2VEC = {"3": {"audio_encoder": "wav2vec2-core.safetensors"}}

# The basic workflow as an earlier version saved it (today's pack brings it up to date when it is posted).
OLD_API = {}

# A MEMO network in the singing workflow, with an emotion picked on its EMO Family Options node.
MEMO = {"11": {"emotion": "happy"}}


def write_core_wav2vec(folder, hidden: int = 64, layers: int = 2):
    """A random wav2vec2 in ComfyUI core's audio_encoders conventions: one fp16 safetensors file,
    keys under `wav2vec2.`, no config (64 wide: one 64-wide head, as the shapes say)."""
    from safetensors.torch import save_file
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(7)
    model = Wav2Vec2Model(Wav2Vec2Config(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64, intermediate_size=2 * hidden,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=32))
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"wav2vec2." + k: v.half().contiguous() for k, v in model.state_dict().items()},
              str(folder / "wav2vec2-core.safetensors"))


@pytest.mark.parametrize("workflow,settings", [("emo_basic", {}), ("emo_photo_crop_paste", {}),
                                               ("emo_basic", LOW_VRAM_FAST), ("emo_echomimic", {}),
                                               ("emo_echomimic_v2", {}),
                                               ("emo_basic", CORE_WAV2VEC), ("emo_long_audio", {}), ("emo_singing", {}),
                                               ("emo_singing", MEMO), ("emo_basic", OLD_API), ("emo_joyhallo", {}),
                                               ("emo_vexpress", {})],
                         ids=["basic", "photo", "low-vram-fast", "echomimic", "echomimic-v2", "audio-encoders-wav2vec",
                              "long-audio", "singing", "memo-singing", "old-saved-api-prompt", "joyhallo", "vexpress"])
def test_workflow_in_real_comfyui(tmp_path, workflow, settings):
    from emo_pipeline.config import tiny_echomimic_config
    from emo_pipeline.io.loading import convert_checkpoint
    from emo_pipeline.io.media import read_video_info, write_video  # noqa: F401 (write_video used below)
    from emo_pipeline.tiny import write_tiny_echomimic_folder, write_tiny_model_folder

    models = tmp_path / "models"
    write_tiny_model_folder(models / "emo")
    if settings is CORE_WAV2VEC:  # a network whose audio projection takes the 64-wide wav2vec features
        from emo_pipeline.config import tiny_config

        write_tiny_model_folder(models / "emo", name="tiny64", config=tiny_config(audio_feature_dim=64))
        write_core_wav2vec(models / "audio_encoders")
        checkpoint, fps = "tiny64/net.safetensors", 25
    elif settings is MEMO:
        # MEMO's download layout (tiny), converted to our single file so that its tiny config travels with it;
        # the VAE and wav2vec2 come from models/emo, as for a real MEMO download
        from emo_pipeline.config import tiny_memo_config
        from emo_pipeline.tiny import write_tiny_memo_folder

        folder = write_tiny_memo_folder(models / "emo", tiny_memo_config())
        convert_checkpoint(folder, folder / "net.safetensors", config=tiny_memo_config())
        checkpoint, fps = "memo/net.safetensors", 30
    elif workflow == "emo_echomimic":
        # EchoMimic's download layout (tiny), converted to our single file so that its tiny config travels
        # with it; whisper_tiny.pt and sd-vae-ft-mse/ are found beside it, as in a real download.
        folder = write_tiny_echomimic_folder(models / "emo" / "echomimic")
        convert_checkpoint(folder, folder / "net.safetensors", config=tiny_echomimic_config())
        checkpoint, fps = "echomimic/net.safetensors", 24
    elif workflow == "emo_echomimic_v2":
        # EchoMimic v2's download layout (tiny), converted likewise (its tiny config travels with the file: the
        # subprocess cannot patch the loader's config as tests/test_pose_nodes.py does), and a demo-format pose
        # sequence named 01, as the workflow's EMO Load Poses asks, where its demo sequences are copied to
        from emo_pipeline.config import tiny_echomimic_v2_config
        from emo_pipeline.poses.demo_files import save_pose_folder
        from test_pose_nodes import demo_like

        folder = write_tiny_echomimic_folder(models / "emo" / "echomimic_v2", tiny_echomimic_v2_config())
        convert_checkpoint(folder, folder / "net.safetensors", config=tiny_echomimic_v2_config())
        save_pose_folder(demo_like(10), folder / "poses" / "01")
        checkpoint, fps = "echomimic_v2/net.safetensors", 24
    elif workflow == "emo_joyhallo":
        # JoyHallo's download layout (tiny: joyhallo/net.pth with its own keys, chinese-wav2vec2-base/ as the
        # pretraining checkpoint, in models/emo), the network converted to our single file so that its tiny config
        # travels with it; the Mandarin wav2vec2 is found in models/emo as for a real download
        from emo_pipeline.config import tiny_joyhallo_config
        from test_joyhallo import write_tiny_joyhallo

        write_tiny_joyhallo(models / "emo")  # its vae/ is the same tiny VAE as the one written above
        folder = models / "emo" / "joyhallo"
        convert_checkpoint(folder / "net.pth", folder / "net.safetensors", config=tiny_joyhallo_config(name="joyhallo"))
        (folder / "net.pth").unlink()
        checkpoint, fps = "joyhallo/net.safetensors", 25
    elif workflow == "emo_vexpress":
        # V-Express's download layout (tiny: v-express/ with its five .bin files, vae/ and wav2vec/ beside it, in
        # models/emo), converted to our single file so that its tiny config travels with it; a SCRFD-format detector
        # in face_analysis/models (as the download places it): the photo's own keypoints are drawn in every frame,
        # since the template's EMO Load Face Keypoints is bypassed (fix_face, a still head)
        from emo_pipeline.config import tiny_vexpress_config
        from emo_pipeline.tiny import write_tiny_vexpress_folder
        from test_face import scrfd_model

        folder = write_tiny_vexpress_folder(models / "emo")
        convert_checkpoint(folder, folder / "net.safetensors", config=tiny_vexpress_config())
        for part in folder.glob("*.bin"):
            part.unlink()
        (models / "emo" / "face_analysis" / "models").mkdir(parents=True)
        scrfd_model(models / "emo" / "face_analysis" / "models" / "scrfd_10g_bnkps.onnx")
        checkpoint, fps = "v-express/net.safetensors", 30
    else:
        checkpoint, fps = "tiny/net.safetensors", 25
    if workflow in ("emo_singing", "emo_joyhallo"):  # a Kim_Vocal_2-shaped model that passes the voice band only
        from emo_pipeline.tiny import write_mask_separator

        bins = torch.arange(3072) * 44100 / 7680
        write_mask_separator(models / "emo" / "audio_separator" / "Kim_Vocal_2.onnx",
                             ((bins > 80) & (bins < 4000)).float().expand(4, -1).numpy())
    custom = tmp_path / "custom_nodes"
    custom.mkdir()
    (custom / "emo_portrait").symlink_to(ROOT, target_is_directory=True)
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"emo_test:\n  base_path: {tmp_path}\n  custom_nodes: {custom}\n  emo: {models / 'emo'}\n"
                      f"  audio_encoders: {models / 'audio_encoders'}\n")
    out, inp = tmp_path / "output", tmp_path / "input"
    out.mkdir(), inp.mkdir(), (tmp_path / "user").mkdir()
    port = free_port()
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    log = open(tmp_path / "comfyui.log", "w")
    server = subprocess.Popen(
        [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--extra-model-paths-config",
         str(config), "--output-directory", str(out), "--input-directory", str(inp),
         "--user-directory", str(tmp_path / "user"), "--database-url", "sqlite:///:memory:"],
        cwd=COMFYUI, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})  # nothing is fetched; a download asked for fails plainly
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for("ComfyUI to start", lambda: request(f"{base}/object_info/EMOSampler"), server,
                 tmp_path / "comfyui.log", 600)
        log_text = (tmp_path / "comfyui.log").read_text()
        assert "IMPORT FAILED" not in log_text and "Cannot import" not in log_text, log_text[-3000:]

        from skimage import data

        picture = data.astronaut()  # a real photo with a face
        if workflow == "emo_vexpress":  # bright enough for the planted detector's score (as in tests/test_face.py)
            picture = np.clip(picture.astype(int) + 120, 0, 255).astype(np.uint8)
        Image.fromarray(picture).save(tmp_path / "p.png")
        wav = tmp_path / "speech.wav"
        import av

        with av.open(str(wav), "w") as c:  # a real 44.1 kHz stereo WAV
            stream = c.add_stream("pcm_s16le", rate=44100, layout="stereo")
            frame = av.AudioFrame.from_ndarray((speech_like(0.5, 44100, 2).numpy() * 32767).astype(np.int16).T.reshape(1, -1),
                                               format="s16", layout="stereo")
            frame.sample_rate = 44100
            c.mux(stream.encode(frame))
            c.mux(stream.encode(None))
        image_name, audio_name = upload(base, tmp_path / "p.png"), upload(base, wav)

        folder = ROOT / "tests" / "data" / "old_workflows" / "api" if settings is OLD_API else \
            ROOT / "example_workflows" / "api"
        prompt = json.loads((folder / f"{workflow}.api.json").read_text())
        prompt["1"]["inputs"]["image"] = image_name
        prompt["2"]["inputs"]["audio"] = audio_name
        prompt["3"]["inputs"]["checkpoint"] = checkpoint
        prompt["6"]["inputs"].update(steps=2, preset="custom")  # 2 steps: the widgets decide
        for node, inputs in settings.items():
            prompt[node]["inputs"].update(inputs)
        reply = request(f"{base}/prompt", json.dumps({"prompt": prompt}).encode(), {"Content-Type": "application/json"})
        prompt_id = reply["prompt_id"]

        def finished() -> dict | None:
            history = request(f"{base}/history/{prompt_id}").get(prompt_id)
            done = history and history["status"].get("completed") is not None
            return history if done and history["status"]["status_str"] != "running" else None

        history = wait_for("the workflow to finish", finished, server, tmp_path / "comfyui.log", 1800)
        assert history["status"]["status_str"] == "success", json.dumps(history["status"])[-3000:]
        saver = "6" if workflow in ("emo_long_audio", "emo_singing", "emo_vexpress") else "7"  # Sample To Video writes it
        video = history["outputs"][saver]["images"][0]
        path = out / video["subfolder"] / video["filename"]
        info = read_video_info(path)
        frames = math.ceil(0.5 * fps)  # one frame per audio frame of the 0.5-s clip
        assert info["frame_count"] == frames and info["fps"] == fps
        photo = workflow in ("emo_photo_crop_paste", "emo_echomimic")
        assert (info["width"], info["height"]) == ((512, 512) if photo else (64, 64))
        assert abs(info["audio_duration"] - frames / fps) < 1e-3
        assert "workflow" in info["metadata"] or "prompt" in info["metadata"]
        if workflow == "emo_echomimic_v2":  # EMO Preview Poses drew the 10 poses over the photo, for Preview Image
            preview = history["outputs"]["11"]["images"]
            assert len(preview) == 10 and all(image["type"] == "temp" for image in preview)
        if workflow == "emo_basic" and settings == {} and settings is not OLD_API:
            # ComfyUI's error report names our exceptions plainly: a download asked for while HF_HUB_OFFLINE is set
            prompt["3"]["inputs"]["checkpoint"] = "download: hallo"
            reply = request(f"{base}/prompt", json.dumps({"prompt": prompt}).encode(),
                            {"Content-Type": "application/json"})
            prompt_id = reply["prompt_id"]
            history = wait_for("the download to fail", finished, server, tmp_path / "comfyui.log", 600)
            errors = [data for event, data in history["status"]["messages"] if event == "execution_error"]
            assert [(e["node_type"], e["exception_type"]) for e in errors] == [("LoadEMOModel",
                                                                                "emo_portrait.DownloadError")]
            assert "HF_HUB_OFFLINE" in errors[0]["exception_message"]
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
