"""V-Express's keypoint retargeting: our emo_pipeline/poses/face_keypoint_sequence.retarget against V-Express's own
retarget_kps (pipelines/utils.py), and our kps.pth reader against torch.load, on the same keypoints.

Nothing of V-Express is copied here: pipelines/utils.py is loaded at run time by its file path from the user's
checkout of tencent-ailab/V-Express (it imports OpenCV, torch, tqdm and imageio_ffmpeg; imageio_ffmpeg, which it
only uses to write videos, is given a stand-in when it is not installed). Nothing is downloaded.

    PYTHONPATH=/path/to/opencv python benchmarks/vexpress_retarget.py /path/to/V-Express  [--seed 0]
    (or VEXPRESS_PATH=/path/to/V-Express)

The strategies are compared as inference.py:279-289 applies them: fix_face is torch.tensor([reference] * L),
no_retarget the sequence itself, offset_retarget and naive_retarget its retarget_kps(reference, sequence,
only_offset=True / False); every sequence is a float32 [L, 3, 2] (what its length fitting hands on), the reference
float32 [3, 2] (insightface's kps). Sequences:

  random face    a face-like reference and a random walk of face-like driving frames (L = 1, 2, 7, 24, 100, 500)
  random points  reference and frames anywhere in the 512² frame (noses off the eye segment's span: the clamp)
  hand-made      the tys reference (spec §3.1) with: a pure translation, a head turning left then right (where the
                 reference's bug picks another frame than the closest), a frame equal to the reference, tilted heads
  test_samples   every kps.pth in the checkout, each with its own frame 0 and a face-like reference

and each kps.pth of the checkout is read by both (torch.load(weights_only=False) of a trusted file, ours without
running its pickle) and the arrays compared.

Results (tencent-ailab/V-Express 6814f7d, --seed 0; torch 2.13, opencv-python-headless 5.1):
  numpy 1.26.4 (V-Express's numpy; PYTHONPATH=<opencv>:<numpy 1.26.4>): max |ours - reference| = 0 px for every
      group and strategy (156 sequences: 48 random face, 48 random points, 6 hand-made, 54 from test_samples; each
      through all 4 strategies). 27 kps.pth files (13,014 frames) read alike: 0 difference. V-Express's buggy pick
      is not the closest frame in 31/48, 30/48, 5/6 and 52/54 sequences: the bug decides the scale nearly always.
  numpy 2.4.6: fix_face and no_retarget 0 px; offset_retarget and naive_retarget at most 3.05e-05 px (random
      face), 1.22e-04 px (random points), 0 (hand-made), 6.1e-05 px (test_samples): numpy 2 squares the reference's
      float32 scalars in float32 (numpy 1 in float64, which ours follows), so its scales differ in the last bit (a
      different measured frame would move points by pixels, not 1e-4). kps.pth files: 0 difference.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_common import checkout_path  # noqa: E402

from emo_pipeline.poses.face_keypoint_sequence import STRATEGIES, read_kps_pth, retarget  # noqa: E402

TYS_REFERENCE = np.array([[193.2, 229.8], [312.5, 229.6], [252.1, 301.9]], np.float32)  # spec §3.1's frame 0


def vexpress_utils(path: Path) -> types.ModuleType:
    """pipelines/utils.py of the checkout, loaded by file path under a private name (no __pycache__ written)."""
    if importlib.util.find_spec("imageio_ffmpeg") is None:  # only its video writer uses it
        stand_in = types.ModuleType("imageio_ffmpeg")
        stand_in.get_ffmpeg_exe = lambda: (_ for _ in ()).throw(RuntimeError("no ffmpeg in this benchmark"))
        sys.modules["imageio_ffmpeg"] = stand_in
    spec = importlib.util.spec_from_file_location("vexpress_pipelines_utils", path / "pipelines" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writes_bytecode
    return module


def face(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """Eyes side by side above a nose, tilted, somewhere in the frame."""
    cx, cy = rng.uniform(0.3, 0.7) * size, rng.uniform(0.3, 0.6) * size
    gap, drop, tilt = rng.uniform(0.1, 0.3) * size, rng.uniform(0.05, 0.2) * size, rng.uniform(-0.4, 0.4)
    points = np.array([[-gap / 2, 0.0], [gap / 2, 0.0], [rng.normal(0, gap * 0.15), drop]])
    rot = np.array([[np.cos(tilt), -np.sin(tilt)], [np.sin(tilt), np.cos(tilt)]])
    return (points @ rot.T + [cx, cy]).astype(np.float32)


def walk(rng: np.random.Generator, length: int) -> np.ndarray:
    start = face(rng)
    steps = np.cumsum(rng.normal(0, 2.0, (length, 3, 2)), axis=0) + np.cumsum(rng.normal(0, 1.0, (length, 1, 2)), 0)
    return (start + steps).astype(np.float32)


def hand_made() -> list[tuple[str, np.ndarray, np.ndarray]]:
    ref = TYS_REFERENCE
    shift = np.arange(30, dtype=np.float32)[:, None, None] * np.array([1.5, -0.5], np.float32)
    turn = []
    for k in np.concatenate([np.linspace(0, 1, 15), np.linspace(1, -1, 30), np.linspace(-1, 0, 15)]):
        nose = ref[2] + np.array([40 * k, 0], np.float32)  # the nose swings: the eye-nose ratio sweeps through 1
        turn.append(np.stack([ref[0], ref[1], nose]))
    tilted = []
    for angle in np.linspace(-0.5, 0.5, 21):
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
        tilted.append((ref - ref[2]) @ rot.T + ref[2])
    outside = np.array([[[100, 200], [200, 200], [260, 260]], [[100, 200], [200, 200], [40, 230]]], np.float32)
    return [("translation", ref, (ref + shift).astype(np.float32)),
            ("turning head", ref, np.array(turn, np.float32)),
            ("reference itself", ref, np.repeat(ref[None], 5, 0)),
            ("tilted head", ref, np.array(tilted, np.float32)),
            ("nose beyond the eyes' span", ref, outside),
            ("smaller face", face(np.random.default_rng(7)), (ref * 0.5 + 100).astype(np.float32)[None].repeat(9, 0))]


def theirs(utils: types.ModuleType, ref: np.ndarray, seq: np.ndarray, strategy: str) -> np.ndarray:
    """What inference.py:279-289 makes of a fitted sequence (a float32 tensor there) for `strategy`."""
    tensor = torch.from_numpy(seq.copy())
    if strategy == "fix_face":
        return torch.tensor(np.array([ref] * len(seq))).numpy()
    if strategy == "no_retarget":
        return tensor.numpy()
    return np.asarray(utils.retarget_kps(ref.copy(), tensor, only_offset=strategy == "offset_retarget"))


def picks(utils: types.ModuleType, ref: np.ndarray, seq: np.ndarray) -> tuple[int | None, int]:
    """The frame V-Express's retarget_kps measures on (its loop's rule, run on its own compute_ratio) and the frame
    truly closest in ratio: where they differ, the bug decides the scale."""
    ref_ratio, delta, picked = utils.compute_ratio(ref), 10000, None
    ratios = [utils.compute_ratio(frame) for frame in seq]
    for index, ratio in enumerate(ratios):
        if abs(ratio - ref_ratio) < delta:
            picked, delta = index, ratio
    return picked, int(np.argmin([abs(r - ref_ratio) for r in ratios]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", nargs="?", help="a tencent-ailab/V-Express checkout (else VEXPRESS_PATH)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = checkout_path(args.checkout, "VEXPRESS_PATH", "pipelines/utils.py", "tencent-ailab/V-Express")
    utils = vexpress_utils(path)
    rng = np.random.default_rng(args.seed)
    print(f"numpy {np.__version__}, torch {torch.__version__}, V-Express at {path}")

    groups: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {"random face": [], "random points": [],
                                                                     "hand-made": hand_made(), "test_samples": []}
    for length in (1, 2, 7, 24, 100, 500):
        for _ in range(8):
            groups["random face"].append((f"L={length}", face(rng), walk(rng, length)))
            groups["random points"].append((f"L={length}", rng.uniform(0, 512, (3, 2)).astype(np.float32),
                                            rng.uniform(0, 512, (length, 3, 2)).astype(np.float32)))
    files = sorted(path.rglob("*kps*.pth"))
    read_differences, frames_read = [], 0
    for file in files:
        trusted = np.array(torch.load(file, weights_only=False), np.float32)  # V-Express's own files, trusted here
        ours = read_kps_pth(file)
        read_differences.append(float(np.abs(ours - trusted).max()) if ours.shape == trusted.shape else np.inf)
        frames_read += len(ours)
        groups["test_samples"] += [(file.parent.name, ours[0].copy(), ours), (file.parent.name, face(rng), ours)]

    worst_all = 0.0
    for group, cases in groups.items():
        for strategy in STRATEGIES:
            worst = 0.0
            for _, ref, seq in cases:
                ours = retarget(ref, seq, strategy)
                reference = theirs(utils, ref, seq, strategy)
                worst = max(worst, float(np.abs(ours.astype(np.float64) - reference).max()))
                if ours.dtype != np.float32 or ours.shape != reference.shape:
                    raise SystemExit(f"{group}: {strategy} gave {ours.dtype} {ours.shape}, the reference "
                                     f"{reference.dtype} {reference.shape}")
            worst_all = max(worst_all, worst)
            print(f"{group:14s} {strategy:16s} {len(cases):4d} sequences: max |ours - V-Express| = {worst:.3g} px")
        found = [picks(utils, ref, seq) for _, ref, seq in cases]
        print(f"{group:14s} sequences whose measured frame is not the closest (V-Express's bug): "
              f"{sum(p != c for p, c in found)} of {len(found)}")
    print(f"kps.pth files read: {len(files)} ({frames_read} frames), max |ours - torch.load| = "
          f"{max(read_differences, default=0.0):.3g}")
    print(f"overall max difference: {worst_all:.3g} px")


if __name__ == "__main__":
    main()
