"""Render SECONDS of speech with a tiny EchoMimic v2 model through the command line (`generate --poses`, the
poses a sequence in the demo files' format, extended to the audio) in a process of its own, and print, as JSON,
how much the resident memory grew while rendering: the peak during the render minus the resident size just
before it (model loaded, audio encoded, poses read), from /proc (Linux).

    python tests/render_v2_memory.py SECONDS WORKDIR [SIZE [POSE_FRAMES]]

SIZE: the frame side (the tiny network is convolutional: any multiple of 64 runs; default 256, so that a frame
weighs 192 KiB in uint8 and 768 KiB in float32 and a held video would stand out of the run-to-run noise).
Used by tests/test_echomimic_v2.py.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import tiny_families  # noqa: E402
from proc_memory import status_kib  # noqa: E402
from emo_pipeline.config import tiny_echomimic_v2_config  # noqa: E402
from emo_pipeline.io import loading  # noqa: E402
from emo_pipeline.tiny import write_tiny_echomimic_folder  # noqa: E402


def main() -> None:
    from emo_pipeline.cli import main as cli
    from emo_pipeline.pipeline import EMOPipeline
    from emo_pipeline.poses.demo_files import save_pose_folder
    from test_batch import write_wav
    from test_echomimic_v2 import waving_hands

    seconds, root = float(sys.argv[1]), Path(sys.argv[2])
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 256
    pose_frames = int(sys.argv[4]) if len(sys.argv) > 4 else 48
    root.mkdir(parents=True, exist_ok=True)
    model = write_tiny_echomimic_folder(root / "echomimic_v2", tiny_echomimic_v2_config())
    poses = save_pose_folder(waving_hands(pose_frames, size=768), root / "poses")  # as the demo files: 768²
    audio = write_wav(root / "speech.wav", seconds)
    tiny_families.install()
    loading.echomimic_v2_config = lambda: tiny_echomimic_v2_config(name="echomimic-v2", sample_size=size)

    measured = {}
    iter_clips = EMOPipeline.iter_clips

    def measured_iter_clips(self, *args, **kwargs):
        """The render proper: the peak is reset here, once everything before sampling is done."""
        measured["load_peak_kib"] = status_kib("VmHWM")
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM, ru_maxrss) to the present size
        measured["before_kib"] = status_kib("VmRSS")
        measured["started"] = time.perf_counter()
        yield from iter_clips(self, *args, **kwargs)

    EMOPipeline.iter_clips = measured_iter_clips
    out = root / "video.mp4"
    code = cli(["generate", "--model", str(model), "--audio", str(audio), "--poses", str(poses), "--steps", "1",
                "--cfg", "1", "--frames-per-clip", "24", "--out", str(out)])
    assert code == 0
    peak = status_kib("VmHWM")  # to the end of the render: the sound track muxed, the file closed
    before = measured["before_kib"]
    print(json.dumps({"seconds": seconds, "size": size, "path": str(out), "rss_before_mib": before / 1024,
                      "growth_mib": (peak - before) / 1024,
                      "load_peak_mib": measured["load_peak_kib"] / 1024,
                      "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "render_s": time.perf_counter() - measured["started"]}))


if __name__ == "__main__":
    main()
