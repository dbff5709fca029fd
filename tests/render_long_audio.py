"""Render SECONDS of speech through the nodes (tiny model, 1 step) in a process of its own and print, as
JSON, how much the resident memory grew while rendering: the peak during the render minus the resident
size just before it (the audio already encoded), read from /proc (Linux).

    python tests/render_long_audio.py SECONDS stream|image WORKDIR [FRAMES_PER_CLIP [SIZE]]

stream: EMO Sample To Video. image: EMO Sampler → EMO Video Combine (the IMAGE batch path).
Used by tests/test_long_audio.py and benchmarks/long_audio_memory.py.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import comfy_stubs  # noqa: E402
from proc_memory import status_kib  # noqa: E402
from conftest import speech_like  # noqa: E402
from emo_pipeline.config import tiny_config  # noqa: E402
from emo_pipeline.tiny import write_tiny_model_folder  # noqa: E402


def main() -> None:
    seconds, mode, root = float(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    frames_per_clip = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    size = int(sys.argv[5]) if len(sys.argv) > 5 else 64  # frame side: 512 as Hallo's, with the tiny network
    write_tiny_model_folder(root / "models" / "emo", config=tiny_config(sample_size=size))
    comfy_stubs.install(root / "models", root / "output")
    nodes = {k: cls() for k, cls in comfy_stubs.load_pack().NODE_CLASS_MAPPINGS.items()}
    model = nodes["LoadEMOModel"].load("tiny/net.safetensors", "auto", "auto")[0]
    audio = {"waveform": speech_like(seconds)[None], "sample_rate": 16000}
    emo_audio, count, fps = nodes["EMOEncodeAudio"].encode(model, audio, "model default")
    reference, _ = nodes["EMOReferenceNetEncode"].encode(model, torch.rand(1, size, size, 3))
    sampling = (model, reference, emo_audio, 0, 1, 1.0, "custom", "ddim")
    clips = "model default" if frames_per_clip == 0 else str(frames_per_clip)
    options = nodes["EMOSamplerOptions"].make(clips, "model default", 8, 1.0, 1, 1.0, 1.0, 1.0)[0]

    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the present size
    before = status_kib("VmRSS")
    started = time.perf_counter()
    if mode == "stream":
        path = nodes["EMOSampleToVideo"].render(*sampling, "EMO/long", 19, soundtrack=audio, options=options)["result"][1]
    else:
        (frames,) = nodes["EMOSampler"].sample(*sampling, options)["result"]
        path = nodes["EMOVideoCombine"].combine(frames, fps, "EMO/long", 19, audio=audio)["result"][1]
    growth = status_kib("VmHWM") - before
    print(json.dumps({"seconds": seconds, "mode": mode, "frames": count, "fps": fps, "size": size, "path": path,
                      "rss_before_mib": before / 1024, "growth_mib": growth / 1024,
                      "render_s": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
