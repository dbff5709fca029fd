"""EchoMimic v2's pose images: our renderer (emo_pipeline/poses/draw.py) against the reference's own
drawing function run with OpenCV, pixel by pixel, on every frame of the eight demo pose sequences.

Nothing of EchoMimic v2 is copied here: `draw_pose_select_v2` is imported at run time from the user's
checkout of antgroup/echomimic_v2 (src/utils/dwpose_util.py, which needs numpy, matplotlib and OpenCV),
and the demo poses are that checkout's own files (assets/halfbody_demo/pose/<name>/<i>.npy, pickled dicts,
loaded with allow_pickle=True: they are the user's checkout). Nothing is downloaded.

    PYTHONPATH=/path/to/opencv+matplotlib python benchmarks/echomimic_v2_pose_drawing.py \\
        --reference /path/to/echomimic_v2 [--size 768] [--clip-lines auto|yes|no]

Each frame is drawn as infer.py does (draw_pose_select_v2(pose, imh_new, imw_new, ref_w=800), pasted at
draw_pose_params into a black size x size frame) and as we do (draw_hands, paste_pose); the script prints,
per sequence, the frames, the pixels that differ, the largest channel difference and where the
differing pixels lie (at a joint's disc, near the canvas border, elsewhere along a bone), and the time per
frame of each. OpenCV changed how a thick line leaving the image is drawn in late 2025 (see draw.py's
module note); `--clip-lines auto` asks the installed OpenCV which rule it follows, by drawing one such line.

Results (antgroup/echomimic_v2 a312dec: 1,511 frames, 01 336, 02/03/04 241 each, fight 132, good 102,
salute 97, ultraman 121; pose images 768x768 pasted into 768x768 frames):
  opencv-python-headless 5.1.0,  clip_lines=True (auto):  0 pixels differ in all 1,511 frames
  opencv-python-headless 4.10.0, clip_lines=False (auto; the version the reference pins): 0 pixels differ
  5.1.0 against the other rule (--clip-lines no): 32,395 pixels in 378 frames, channels up to 250 apart,
  all from bones that run off the 800x800 canvas (a clipped bone moves along its whole length; most in
  02, good and fight): what the two OpenCV versions differ by on these poses
Time per frame (2 shared CPU cores, another job running): ours about 11 ms, the reference with OpenCV
about 2.5 ms.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emo_pipeline.poses.draw import (BONES, JOINT_RADIUS, canvas_size, draw_hands, paste_pose,  # noqa: E402
                                     thick_line)

POSE_FOLDER = Path("assets/halfbody_demo/pose")


def reference_drawer(checkout: Path):
    """The reference's draw_pose_select_v2, imported from the checkout (no __pycache__ written there)."""
    sys.dont_write_bytecode = True
    sys.path.insert(0, str(checkout))
    from src.utils.dwpose_util import draw_pose_select_v2
    return draw_pose_select_v2


def opencv_clips_lines() -> bool:
    """Whether the installed OpenCV clips a thick line's ends before drawing it (5.1) or not (4.10): one
    line leaving a small image, drawn by cv2 and by both of our rules."""
    import cv2
    image = np.zeros((60, 70), np.uint8)
    cv2.line(image, (50, 30), (90, 40), 255, thickness=2)
    drawn = {}
    for clip in (False, True):
        ours = np.zeros_like(image)
        ours[thick_line(50, 30, 90, 40, 60, 70, clip)] = 255
        drawn[clip] = np.array_equal(ours, image)
    if drawn[False] == drawn[True]:
        raise SystemExit(f"OpenCV {cv2.__version__} draws the probe line by neither rule")
    return drawn[True]


def sequences(checkout: Path) -> dict[str, list[Path]]:
    """Each demo folder's frames in order (files 0.npy, 1.npy, ... as infer.py reads them)."""
    found = {}
    for folder in sorted(p for p in (checkout / POSE_FOLDER).iterdir() if p.is_dir()):
        count = len([p for p in folder.iterdir() if p.suffix == ".npy"])
        found[folder.name] = [folder / f"{i}.npy" for i in range(count)]
    return found


def where(diff: np.ndarray, pose: dict, size_hw: tuple[int, int], placement: tuple[int, int, int, int]) -> dict:
    """Differing pixels (frame coordinates) by place: within a joint disc's reach, within 3 canvas pixels
    of the canvas border, or elsewhere (along a bone)."""
    imh, imw = size_hw
    rb, _, cb, _ = placement
    ch, cw = canvas_size(imh, imw, 800)
    ys, xs = np.nonzero(diff)
    cy, cx = (ys - rb + 0.5) * ch / imh, (xs - cb + 0.5) * cw / imw  # the canvas point each pixel samples
    points = np.stack([np.trunc(pose["hands"][..., 0] * cw), np.trunc(pose["hands"][..., 1] * ch)], -1)
    points = points[(points >= 1).all(-1)]
    near_joint = np.zeros(len(ys), bool)
    if len(points):
        dist = np.hypot(cx[:, None] - points[None, :, 0], cy[:, None] - points[None, :, 1]).min(1)
        near_joint = dist <= JOINT_RADIUS + 2
    near_border = (cx < 3) | (cy < 3) | (cx > cw - 3) | (cy > ch - 3)
    return {"joint disc": int(near_joint.sum()), "canvas border": int((near_border & ~near_joint).sum()),
            "along a bone": int((~near_border & ~near_joint).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True, help="a checkout of antgroup/echomimic_v2")
    parser.add_argument("--size", type=int, default=768, help="the frame the pose is pasted into (infer.py: 768)")
    parser.add_argument("--clip-lines", choices=("auto", "yes", "no"), default="auto",
                        help="our line rule: as the installed OpenCV (auto), 5.1's (yes) or 4.10's (no)")
    parser.add_argument("--limit", type=int, default=0, help="at most this many frames per sequence (0: all)")
    args = parser.parse_args()

    import cv2
    draw_reference = reference_drawer(args.reference.resolve())
    clip = opencv_clips_lines() if args.clip_lines == "auto" else args.clip_lines == "yes"
    print(f"OpenCV {cv2.__version__}; our clip_lines={clip} ({'5.1' if clip else '4.10'}'s rule); "
          f"bones: {len(BONES)}; frame {args.size}x{args.size}")
    print(f"{'sequence':10} {'frames':>6} {'pixels differing':>16} {'max |diff|':>10} {'frames with any':>15}  where")
    totals = {"frames": 0, "pixels": 0, "max": 0, "frames_any": 0}
    time_ours = time_ref = 0.0
    for name, files in sequences(args.reference.resolve()).items():
        files = files[:args.limit] if args.limit else files
        pixels = largest = frames_any = 0
        places: dict[str, int] = {}
        for path in files:
            pose = np.load(path, allow_pickle=True).item()
            imh, imw, rb, re, cb, ce = (int(v) for v in pose["draw_pose_params"])
            start = time.perf_counter()
            reference = np.zeros((args.size, args.size, 3), np.uint8)
            reference[rb:re, cb:ce] = draw_reference(pose, imh, imw, ref_w=800).transpose(1, 2, 0)
            time_ref += time.perf_counter() - start
            start = time.perf_counter()
            ours = paste_pose(draw_hands(pose["hands"], pose["hands_score"], imh, imw, 800, clip_lines=clip),
                              (rb, re, cb, ce), args.size)
            time_ours += time.perf_counter() - start
            diff = np.abs(ours.astype(np.int16) - reference.astype(np.int16))
            differing = diff.any(-1)
            count = int(differing.sum())
            if count:
                frames_any += 1
                pixels += count
                largest = max(largest, int(diff.max()))
                for place, n in where(differing, pose, (imh, imw), (rb, re, cb, ce)).items():
                    places[place] = places.get(place, 0) + n
        spread = ", ".join(f"{k} {v}" for k, v in places.items() if v) or "-"
        print(f"{name:10} {len(files):6d} {pixels:16d} {largest:10d} {frames_any:15d}  {spread}")
        totals["frames"] += len(files)
        totals["pixels"] += pixels
        totals["max"] = max(totals["max"], largest)
        totals["frames_any"] += frames_any
    print(f"{'all':10} {totals['frames']:6d} {totals['pixels']:16d} {totals['max']:10d} {totals['frames_any']:15d}")
    print(f"time per frame: ours {1000 * time_ours / totals['frames']:.1f} ms, "
          f"reference with OpenCV {1000 * time_ref / totals['frames']:.1f} ms")


if __name__ == "__main__":
    main()
