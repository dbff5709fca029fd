"""S3FD and the face tracks side by side: syncnet_python's own code (detectors/s3fd and run_pipeline.py's
track_shot and crop_video) against ours (emo_pipeline/metrics/s3fd.py and face_tracks.py, no OpenCV, no scipy)
on the same random full-size weights, frames and detections.

Getting the reference (nothing of it is copied here, and this script downloads nothing):

    git clone https://github.com/joonson/syncnet_python          # read at commit 6efbb1c
    pip install --target /path/to/cv2lib opencv-python-headless==4.10.0.84
    PYTHONPATH=/path/to/cv2lib SYNCNET_PATH=/path/to/syncnet_python python benchmarks/s3fd_side_by_side.py

(--reference PATH instead of SYNCNET_PATH.) Its detectors/s3fd/{nets,box_utils}.py and the S3FD class of its
__init__.py are imported from the checkout at run time (torchvision, which that file imports and never uses, is
stubbed when missing; numpy 2 lacks the `np.int` its nms_ uses, so np.int is set to int). Its S3FD is built
without its constructor (which loads ./detectors/s3fd/weights/sfd_face.pth onto CUDA): the same S3FDNet with
our random weights, on the CPU. run_pipeline.py runs everything on import, so only its functions
bb_intersection_over_union, track_shot and crop_video are compiled from its source (ast) and run with its
imports; crop_video's frames are lossless PNGs under the .jpg names it globs, its cv2.VideoWriter is replaced by
one that keeps the frames written (no XVID encoding), and its ffmpeg calls and audio read are stubbed.

Weights (seed 0, the same tensors in both networks): every convolution He-normal (std sqrt(2 / fan_in), how
VGG trunks are initialised), biases uniform ±0.05, the heads then scaled by 0.05 so that offsets and logits
are of order one, L2Norm weights at their own initial values 10, 8, 5 times uniform 0.8-1.2. Random weights find
random "faces": the raw network outputs are compared first (input, loc, softmax scores, prior boxes), then
Detect's output, then detect_faces' final boxes at a threshold lowered to each frame's 40th best score (so
that there are boxes to compare: at 0.9 there are few), at run_pipeline's scale 0.25 and at scales [1, 0.5].
Frames: drawn (gradients, noise, figures) at 640x480, 517x333 (round(W·0.25) ≠ W/4: OpenCV's fx path) and
1280x720.

Tracking: the same synthetic detections into both track_shot: a face moving over 160 frames with three gaps
(1, 5 and 10 frames), a second face crossing it, false positives, a short track (under min_track), and a
small face (under min_face_size). Then both crop_video on 160 drawn 640x480 frames, the face reaching past
the frame's edge (the grey padding) and changing size (crops up- and downscaled to 224).

Results (2026-12-07, 2 shared CPU cores; torch 2.13.0, numpy 2.4.6, opencv-python-headless 4.10.0.84, scipy
1.17.1 for its side; syncnet_python 6efbb1c):
  S3FD, every frame (640x480, 517x333, 1280x720) at scales 0.25 and 1: network input (120x160, 83x129 and
  180x320 at 0.25), loc, softmax scores and prior boxes (1,593 to 76,760) 0 apart; Detect's rows the same
  (251, 131, 711 at 0.25; 750 at 1) and 0 apart; detect_faces at the 40th best score (17 to 23 faces) and at
  0.9 (0 to 10 faces), scales [0.25] and [1, 0.5]: boxes and scores equal (np.array_equal), 0 apart.
  Network time about the same on both sides (0.2-2 s a frame at 0.25, 2-15 s at 1, on these busy cores).
  Tracking: 1 track kept of 1 (frames 0-159, interpolated over the gaps): frames and boxes equal, 0 apart
  (scipy's interp1d hands a float64 column over integer frames to numpy.interp, as ours calls it);
  with min_track 10: 3 vs 3 tracks, with min_track 10 and min_face_size 0: 4 vs 4, all equal.
  Crops: 160 of 224x224x3 (half sizes 64-111 px: scaled up and down; the last ones in the grey padding):
  0 pixels differ; smoothed centre and size 0 apart. 0.3 s ours, 0.8 s its crop_video (PNG reads included).
  Not measured here: the XVID AVI and JPEG round trip that run_pipeline and evaluate put the crops through
  (this script captures the frames before the encoder), and ffmpeg's decoding of the source video.
"""

from __future__ import annotations

import argparse
import ast
import glob
import os
import subprocess
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from emo_pipeline.metrics import face_tracks as ours_tracks  # noqa: E402
from emo_pipeline.metrics.s3fd import S3FD, S3FDNet, detect  # noqa: E402
from reference_common import checkout_path  # noqa: E402

SIZES = [(480, 640), (333, 517), (720, 1280)]  # height, width


def draw_frame(height: int, width: int, seed: int) -> np.ndarray:
    """RGB uint8: two gradients and noise, a few heads over bodies, as benchmarks/dwpose_side_by_side.py."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[:height, :width].astype(np.float64)
    image = np.stack([xs / width * 200, ys / height * 180, (xs + ys) / (width + height) * 120], axis=-1)
    image += rng.normal(0, 12, image.shape)
    for _ in range(3):
        cx, cy, scale = rng.uniform(0.2, 0.8) * width, rng.uniform(0.3, 0.7) * height, rng.uniform(0.1, 0.3) * height
        head = (xs - cx) ** 2 + (ys - cy + scale) ** 2 < (0.25 * scale) ** 2
        body = (np.abs(xs - cx) < 0.3 * scale) & (ys > cy - 0.75 * scale) & (ys < cy + scale)
        image[head] = rng.uniform(150, 230, 3)
        image[body] = rng.uniform(20, 250, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def random_weights(net: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in net.state_dict().items():
        if key.endswith(".weight") and value.ndim == 4:
            fan_in = value[0].numel()
            tensor = torch.randn(value.shape, generator=generator) * (2.0 / fan_in) ** 0.5
        elif key.startswith("L2Norm"):
            start = {"L2Norm3_3": 10.0, "L2Norm4_3": 8.0, "L2Norm5_3": 5.0}[key.split(".")[0]]
            tensor = start * (0.8 + 0.4 * torch.rand(value.shape, generator=generator))
        else:
            tensor = (torch.rand(value.shape, generator=generator) - 0.5) * 0.1
        if key.startswith(("loc.", "conf.")):
            tensor = tensor * 0.05
        state[key] = tensor
    return state


def import_reference(path: Path):
    if "torchvision" not in sys.modules:
        try:
            import torchvision  # noqa: F401
        except ImportError:
            stub = types.ModuleType("torchvision")
            stub.transforms = types.ModuleType("torchvision.transforms")
            sys.modules["torchvision"], sys.modules["torchvision.transforms"] = stub, stub.transforms
    if not hasattr(np, "int"):
        np.int = int  # box_utils.nms_ ends in .astype(np.int), removed in numpy 1.24
    sys.path.insert(0, str(path))
    import detectors.s3fd as theirs  # noqa: E402  (its __init__: the S3FD class, cv2, img_mean)
    from detectors.s3fd import box_utils, nets  # noqa: E402
    return theirs, nets, box_utils


def run_pipeline_functions(path: Path, cv2_module) -> dict:
    """bb_intersection_over_union, track_shot and crop_video compiled from run_pipeline.py, with its imports."""
    from scipy import signal
    from scipy.interpolate import interp1d

    source = (path / "run_pipeline.py").read_text()
    tree = ast.parse(source)
    wanted = {"bb_intersection_over_union", "track_shot", "crop_video"}
    module = ast.Module(body=[n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted],
                        type_ignores=[])
    namespace = {"np": np, "interp1d": interp1d, "signal": signal, "cv2": cv2_module, "glob": glob, "os": os,
                 "subprocess": subprocess, "pdb": None}
    exec(compile(module, str(path / "run_pipeline.py"), "exec"), namespace)
    return namespace


class Capture:
    """Records what the reference's network hands to its Detect and what it returns."""

    def __init__(self, net) -> None:
        self.net = net
        original = net.detect.forward

        def forward(loc, conf, priors):
            self.loc, self.conf, self.priors = loc, conf, priors
            self.output = original(loc, conf, priors)
            return self.output

        net.detect.forward = forward
        net.register_forward_pre_hook(lambda module, args: setattr(self, "input", args[0]))


def max_diff(a, b) -> float:
    a, b = (torch.as_tensor(np.asarray(v, dtype=np.float64)) if not torch.is_tensor(v) else v.double()
            for v in (a, b))
    if a.shape != b.shape:
        return float("nan")
    return float((a - b).abs().max()) if a.numel() else 0.0


def compare_detector(theirs_mod, nets) -> None:
    torch.set_grad_enabled(False)
    ours_net = S3FDNet()
    state = random_weights(ours_net)
    ours_net.load_state_dict(state)
    ours = S3FD(ours_net, "cpu")
    their_net = nets.S3FDNet(device="cpu")
    their_net.load_state_dict(state, strict=True)
    their_net.eval()
    reference = object.__new__(theirs_mod.S3FD)  # its __init__ loads its file onto CUDA
    reference.device, reference.net = "cpu", their_net
    capture = Capture(their_net)

    print("S3FD, random full-size weights (seed 0), same frames:")
    for seed, (h, w) in enumerate(SIZES):
        image = draw_frame(h, w, seed)
        for scales in ([0.25], [1, 0.5]):
            # raw outputs at the first scale: the reference's, captured inside its detect_faces
            t0 = time.perf_counter()
            reference.detect_faces(image, conf_th=2.0, scales=scales[:1])
            t_theirs = time.perf_counter() - t0
            t0 = time.perf_counter()
            x, loc, probabilities, priors = ours.raw_outputs(image, scales[0])
            t_ours = time.perf_counter() - t0
            rows = detect(loc, probabilities, priors)
            out = capture.output[0, 1]
            n_theirs = int((out[:, 0] > 0).sum())
            threshold = float(out[min(39, n_theirs - 1), 0]) - 1e-7 if n_theirs else 0.5
            print(f"  {w}x{h} scale {scales[0]:g}: input {tuple(x.shape[2:])} vs {tuple(capture.input.shape[2:])}, "
                  f"max |diff| input {max_diff(x, capture.input):.3g}, loc {max_diff(loc, capture.loc[0]):.3g}, "
                  f"scores {max_diff(probabilities, capture.conf[0, :, 1]):.3g}, "
                  f"priors {max_diff(priors, capture.priors):.3g} ({priors.shape[0]} priors); "
                  f"Detect: {rows.shape[0]} vs {n_theirs} boxes, max |diff| "
                  f"{max_diff(rows, out[:n_theirs]):.3g}; network {t_ours:.2f} s vs {t_theirs:.2f} s")
            mine = ours.detect_faces(image, conf_th=threshold, scales=scales)
            their = reference.detect_faces(image, conf_th=threshold, scales=scales)
            equal = mine.shape == their.shape and np.array_equal(mine, their)
            print(f"    detect_faces(conf_th={threshold:.4f} (40th best), scales={scales}): {len(mine)} vs "
                  f"{len(their)} faces, boxes equal: {equal}, max |diff| {max_diff(mine, their):.3g}")
            mine = ours.detect_faces(image, conf_th=0.9, scales=scales)
            their = reference.detect_faces(image, conf_th=0.9, scales=scales)
            print(f"    detect_faces(conf_th=0.9, scales={scales}): {len(mine)} vs {len(their)} faces, "
                  f"equal: {mine.shape == their.shape and np.array_equal(mine, their)}")


def synthetic_detections(frames: int = 160) -> list[np.ndarray]:
    """Per frame [k, 5] rows: a face drifting right and growing, missing at frames 30, 60-64 and 100-109, past
    the right edge at the end; a second face crossing its path for 40 frames; a false positive now and then; a
    short track (50 frames) and a small face (60 px) for all frames."""
    rng = np.random.default_rng(7)
    detections = []
    for f in range(frames):
        rows = []
        if f not in (30,) and not 60 <= f <= 64 and not 100 <= f <= 109:
            cx, cy, size = 80 + 3.1 * f + rng.normal(0, 1.5), 200 + 20 * np.sin(f / 9) + rng.normal(0, 1.5), \
                130 + 0.6 * f + rng.normal(0, 2)
            rows.append([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2, 0.99 - 0.001 * f])
        if 20 <= f < 60:
            cx = 560 - 9 * (f - 20)
            rows.append([cx - 60, 300, cx + 60, 420, 0.95])
        if f % 17 == 3:
            rows.append([10 + f, 400, 40 + f, 440, 0.91])
        if 5 <= f < 55:
            rows.append([500, 20, 640, 160, 0.97])
        rows.append([300, 380, 360, 440, 0.93])
        detections.append(np.array(rows, dtype=np.float64).reshape(-1, 5))
    return detections


def compare_tracks(cv2, reference_path: Path) -> None:
    detections = synthetic_detections()
    functions = run_pipeline_functions(reference_path, None)
    opt = argparse.Namespace(num_failed_det=25, min_track=100, min_face_size=100, crop_scale=0.4, frame_rate=25)
    scenefaces = [[{"frame": f, "bbox": row[:4].tolist(), "conf": row[4]} for row in d]
                  for f, d in enumerate(detections)]
    their_tracks = functions["track_shot"](opt, scenefaces)
    mine = ours_tracks.track_shot(detections)
    print("Tracking, the same synthetic detections (160 frames):")
    print(f"  tracks kept: {len(mine)} vs {len(their_tracks)}")
    for m, t in zip(mine, their_tracks):
        print(f"  frames {m.frames[0]}-{m.frames[-1]} vs {t['frame'][0]}-{t['frame'][-1]}, frames equal "
              f"{np.array_equal(m.frames, t['frame'])}, boxes equal {np.array_equal(m.boxes, t['bbox'])} "
              f"(max |diff| {max_diff(m.boxes, t['bbox']):.3g})")
    for min_track, min_size in ((10, 100), (10, 0)):  # the shorter tracks, and the small face's
        small = argparse.Namespace(**{**vars(opt), "min_track": min_track, "min_face_size": min_size})
        scenefaces = [[{"frame": f, "bbox": row[:4].tolist(), "conf": row[4]} for row in d]
                      for f, d in enumerate(detections)]
        theirs = functions["track_shot"](small, scenefaces)
        ours = ours_tracks.track_shot(detections, min_track=min_track, min_face_size=min_size)
        same = len(ours) == len(theirs) and all(np.array_equal(m.frames, t["frame"]) and
                                                np.array_equal(m.boxes, t["bbox"]) for m, t in zip(ours, theirs))
        print(f"  min_track {min_track}, min_face_size {min_size}: {len(ours)} vs {len(theirs)} tracks "
              f"({', '.join(f'{m.frames[0]}-{m.frames[-1]}' for m in ours)}), frames and boxes equal: {same}")

    frames = [draw_frame(480, 640, 100 + f) for f in range(len(detections))]
    with tempfile.TemporaryDirectory() as tmp:
        frames_dir = Path(tmp) / "frames" / "ref"
        frames_dir.mkdir(parents=True)
        for f, frame in enumerate(frames):  # PNG bytes under the .jpg names it globs: read back exactly
            ok, data = cv2.imencode(".png", frame[..., ::-1])
            (frames_dir / f"{f + 1:06d}.jpg").write_bytes(data.tobytes())
        written: list[np.ndarray] = []

        class Writer:
            def __init__(self, *args, **kwargs) -> None:
                pass

            def write(self, image) -> None:
                written.append(image.copy())

            def release(self) -> None:
                pass

        fake_cv2 = types.SimpleNamespace(VideoWriter_fourcc=cv2.VideoWriter_fourcc, VideoWriter=Writer,
                                         imread=cv2.imread, resize=cv2.resize)
        functions = run_pipeline_functions(reference_path, fake_cv2)
        functions["subprocess"] = types.SimpleNamespace(call=lambda *a, **k: 0)
        functions["wavfile"] = types.SimpleNamespace(read=lambda path: (16000, np.zeros(16000, np.int16)))
        functions["os"] = types.SimpleNamespace(path=os.path, remove=lambda path: None)
        crop_opt = argparse.Namespace(**vars(opt), frames_dir=str(Path(tmp) / "frames"), reference="ref",
                                      tmp_dir=tmp, avi_dir=tmp)
        t0 = time.perf_counter()
        their_crops = []
        for track in their_tracks:
            written.clear()
            proc = functions["crop_video"](crop_opt, track, str(Path(tmp) / "crop"))
            their_crops.append((np.stack(written), proc["proc_track"]))
        t_theirs = time.perf_counter() - t0
        t0 = time.perf_counter()
        mine_crops = ours_tracks.crop_tracks(iter(frames), mine)
        t_ours = time.perf_counter() - t0
    print("Crops (BGR 224x224, before any video encoding), the same frames:")
    for m, (t, proc) in zip(mine_crops, their_crops):
        diff = np.abs(m.crops.astype(np.int16) - t.astype(np.int16))
        print(f"  {m.crops.shape} vs {t.shape}: pixels differing {int((diff > 0).sum())}, max |diff| "
              f"{int(diff.max()) if diff.size else 0}; smoothed x, y, s max |diff| "
              f"{max(max_diff(m.x, proc['x']), max_diff(m.y, proc['y']), max_diff(m.s, proc['s'])):.3g}; "
              f"half sizes {m.s.min():.1f}-{m.s.max():.1f} px; {t_ours:.2f} s vs {t_theirs:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", help="a syncnet_python checkout (default: $SYNCNET_PATH)")
    parser.add_argument("--tracks-only", action="store_true", help="skip the detector (minutes on a CPU)")
    args = parser.parse_args()
    path = checkout_path(args.reference, "SYNCNET_PATH", "run_pipeline.py", "joonson/syncnet_python")
    import cv2

    warnings.filterwarnings("ignore", message="An output with one or more elements was resized")  # its nms
    print(f"torch {torch.__version__}, numpy {np.__version__}, OpenCV {cv2.__version__}, reference {path}")
    theirs, nets, _ = import_reference(path)
    compare_tracks(cv2, path)
    if not args.tracks_only:
        compare_detector(theirs, nets)


if __name__ == "__main__":
    main()
