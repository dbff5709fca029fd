"""No network at run time: a render with the vocal separator and the face models (onnxruntime) runs in a
child process under a network guard, a preloaded library (tests/network_guard.c) that records and fails
every host lookup and internet connection, whether Python's socket module or a native library makes it.

onnxruntime 1.2x starts Microsoft's telemetry on import: a store under ~/.cache/Microsoft at once, and DNS
lookups of mobile.events.data.microsoft.com some seconds later. The child's HOME is a folder of the test's,
so the store is seen as soon as it is written, without waiting for a lookup."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, machine_slowness

pytest.importorskip("onnxruntime")
if not sys.platform.startswith("linux"):
    pytest.skip("the guard is an LD_PRELOAD library (glibc)", allow_module_level=True)

TELEMETRY_HOST = "mobile.events.data.microsoft.com"


@pytest.fixture(scope="module")
def guard(tmp_path_factory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the network guard")
    library = tmp_path_factory.mktemp("guard") / "network_guard.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(library), str(ROOT / "tests" / "network_guard.c"),
                    "-ldl"], check=True, capture_output=True)
    return library


def run_guarded(guard: Path, folder: Path, args: list[str]) -> tuple[subprocess.CompletedProcess, list[str], list[Path]]:
    """`python args` with the guard preloaded and HOME in `folder`: the result, the network calls the guard
    refused, and the files written under HOME."""
    home, log = folder / "home", folder / "network.log"
    home.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LD_PRELOAD": str(guard), "NETWORK_GUARD_LOG": str(log),
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    result = subprocess.run([sys.executable, *args], cwd=folder, env=env, capture_output=True, text=True,
                            timeout=900 * machine_slowness())
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls, [p for p in home.rglob("*") if p.is_file()]


def test_the_guard_catches_a_lookup_from_python_and_from_native_code(guard, tmp_path):
    planted = ("import ctypes, socket\n"
               "try:\n"
               f"    socket.getaddrinfo('{TELEMETRY_HOST}', 443)\n"
               "except OSError as err:\n"
               "    print('refused:', err)\n"
               "libc = ctypes.CDLL(None)  # as a native library would call it\n"
               "result = ctypes.c_void_p()\n"
               "print('native:', libc.getaddrinfo(b'example.org', b'443', None, ctypes.byref(result)))\n"
               "try:\n"
               "    socket.socket().connect(('192.0.2.1', 80))\n"
               "except OSError as err:\n"
               "    print('refused:', err)\n")
    result, calls, _ = run_guarded(guard, tmp_path, ["-c", planted])
    assert result.returncode == 0, result.stderr
    assert calls == [f"getaddrinfo {TELEMETRY_HOST}", "getaddrinfo example.org", "connect 192.0.2.1"]
    assert result.stdout.count("refused:") == 2 and "native: 0" not in result.stdout


def test_a_render_with_the_separator_and_face_models_uses_no_network(guard, tmp_path):
    from PIL import Image

    from test_face import arcface_model, scrfd_model
    from emo_pipeline.config import tiny_config
    from emo_pipeline.io.media import read_video_info, write_video
    from emo_pipeline.tiny import write_mask_separator, write_tiny_model_folder

    models = tmp_path / "models"  # models/tiny/net.safetensors (taking ArcFace's 512 values), vae/, wav2vec/
    write_tiny_model_folder(models, config=tiny_config(identity_dim=512))
    faces = models / "face_analysis" / "models"
    faces.mkdir(parents=True)
    scrfd_model(faces / "scrfd_10g_bnkps.onnx")
    arcface_model(faces / "glintr100.onnx", np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32))
    write_mask_separator(models / "audio_separator" / "Kim_Vocal_2.onnx", np.ones((4, 3072), np.float32))
    Image.fromarray(np.full((480, 800, 3), 230, np.uint8)).save(tmp_path / "photo.png")  # the planted faces show
    write_video(tmp_path / "song.mp4", torch.rand(10, 16, 16, 3), 25,
                audio=((torch.rand(2, 22050) - 0.5) * 0.5, 44100))
    result, calls, written = run_guarded(guard, tmp_path, [
        "-m", "emo_pipeline", "generate", "--model", str(models / "tiny"), "--image", "photo.png",
        "--audio", "song.mp4", "--separate-vocals", "--out", "video.mp4", "--steps", "1"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "separating vocals: chunk" in result.stdout and "Faces found: 2; identity embedding: yes" in result.stdout
    assert calls == []  # no lookup, no connection
    assert written == []  # nothing outside where the user asked (onnxruntime's telemetry store)
    assert read_video_info(tmp_path / "video.mp4")["frame_count"] == 10  # the sound track lasts as long as its 10 frames
