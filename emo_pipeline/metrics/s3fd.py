"""S3FD (Zhang et al., "Single Shot Scale-invariant Face Detector", 2017) as syncnet_python runs it to find the
faces SyncNet scores (its detectors/s3fd: nets.py, box_utils.py and the S3FD class in __init__.py, read at
commit 6efbb1c): a VGG-16 trunk with L2-normalised conv3_3, conv4_3 and conv5_3, fc6/fc7 as convolutions, two
extra stages, and six 3x3 heads of box offsets and face/background scores on strides 4 to 128.

The layers sit where S3FDNet puts them, so the state-dict keys are its own: vgg.N.* (N the index in its
ModuleList, activations and pools counted), L2Norm3_3.weight, L2Norm4_3.weight, L2Norm5_3.weight, extras.N.*,
loc.N.*, conf.N.*: 65 tensors, 22,459,110 values (tests/data/s3fd_keys.tsv lists them, from nets.py's own
code). `sfd_face.pth` is a flat state dict with exactly these keys (S3FD.__init__ loads the unpickled file
straight into the network with a strict load_state_dict, nothing renamed), so `load_s3fd` reads it
weights-only (metrics/weights.py) and loads it strictly.

`S3FD.detect_faces(image, conf_th, scales)` is the reference's, step by step:
- the image is RGB uint8 [H, W, 3] (run_pipeline.py converts cv2's BGR frames to RGB before the call);
- per scale s: cv2.resize(image, (0, 0), fx=s, fy=s, INTER_LINEAR), redone bit for bit without OpenCV by
  poses/dwpose.resize_linear (the output size round(W·s) x round(H·s), pixels mapped by 1/s, as OpenCV does);
- float32, minus the BGR mean (104, 117, 123) applied after its swap to BGR and swapped back: the network
  sees R − 123, G − 117, B − 104, in RGB order, [1, 3, h, w];
- the network: loc [P, 4] and conf [P, 2] (the first head's background is the max of three "max-out"
  channels), one prior box per cell, P = Σ cells of the six maps;
- softmax; prior boxes (centre (j + 0.5)·step / w, size min_size / w, min sizes 16..512, computed in float64
  and kept as float32 as its PriorBox does); decode with variances (0.1, 0.2); scores above 0.05; its
  torch NMS (overlap 0.3, the 5000 best, the 750 first kept), in its own tensor operations;
- the kept boxes with score > conf_th, in score order, times (W, H, W, H) of the original image (float32);
- all scales together through its numpy NMS at overlap 0.1 (areas without +1): float64 [n, 5] rows
  (x1, y1, x2, y2, score) in the original image's pixels.
run_pipeline.py calls it as `detect_faces(image_np, conf_th=0.9, scales=[0.25])` (DETECTION_SCALE,
DETECTION_THRESHOLD here).

On the CPU every step is the reference's own operation in the same order, in float32 (benchmarks/
s3fd_side_by_side.py holds the two side by side). On another device the network and softmax run there and the
post-processing on the CPU (the reference decodes and suppresses on the device too: last-bit differences).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import nn

from ..poses.dwpose import resize_linear
from .weights import read_strict_state

WEIGHTS_FILE = "sfd_face.pth"
EXPECTED_FILE = "sfd_face.pth (joonson/syncnet_python's S3FD; mirrored in ByteDance/LatentSync-1.5 under auxiliary/)"
DETECTION_SCALE = 0.25      # run_pipeline.py's --facedet_scale default
DETECTION_THRESHOLD = 0.9   # run_pipeline.py's conf_th
MEAN_RGB = (123.0, 117.0, 104.0)  # img_mean (104, 117, 123) is BGR; the network's input is RGB
MIN_SIZES = (16, 32, 64, 128, 256, 512)
STEPS = (4, 8, 16, 32, 64, 128)
VARIANCES = (0.1, 0.2)
CANDIDATE_SCORE = 0.05      # Detect's conf_thresh
NMS_OVERLAP = 0.3           # Detect's nms_thresh
NMS_TOP_K = 5000            # Detect's nms_top_k: candidates NMS looks at
KEEP_TOP_K = 750            # Detect's top_k: boxes kept per image
MERGE_OVERLAP = 0.1         # detect_faces' nms_ over every scale


class L2Norm(nn.Module):
    """x / (‖x‖₂ over channels + 1e-10) · weight, the weight starting at `scale` (10, 8, 5 in S3FD)."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.eps = 1e-10
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return rearrange(self.weight, "c -> 1 c 1 1") * torch.div(x, norm)


def _vgg() -> nn.ModuleList:
    layers: list[nn.Module] = []
    channels = 3
    for block, (width, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        for _ in range(convs):
            layers += [nn.Conv2d(channels, width, 3, 1, padding=1), nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.MaxPool2d(2, 2, ceil_mode=block == 2))  # only pool3 rounds up, as nets.py has it
    layers += [nn.Conv2d(512, 1024, 3, 1, padding=6, dilation=6), nn.ReLU(inplace=True),  # fc6, fc7
               nn.Conv2d(1024, 1024, 1, 1), nn.ReLU(inplace=True)]
    return nn.ModuleList(layers)  # 35 modules: conv3_3's ReLU ends at 16, conv4_3's at 23, conv5_3's at 30


class S3FDNet(nn.Module):
    """nets.py's S3FDNet up to the heads: `forward` gives the raw loc [N, P, 4] and conf logits [N, P, 2]
    (before softmax), and the six maps' (h, w) that the prior boxes are laid on."""

    SOURCE_ENDS = (16, 23, 30)  # vgg indices after which conv3_3, conv4_3 and conv5_3 (+ ReLU) are taken

    def __init__(self) -> None:
        super().__init__()
        self.vgg = _vgg()
        self.L2Norm3_3 = L2Norm(256, 10)
        self.L2Norm4_3 = L2Norm(512, 8)
        self.L2Norm5_3 = L2Norm(512, 5)
        self.extras = nn.ModuleList([nn.Conv2d(1024, 256, 1, 1), nn.Conv2d(256, 512, 3, 2, padding=1),
                                     nn.Conv2d(512, 128, 1, 1), nn.Conv2d(128, 256, 3, 2, padding=1)])
        source_channels = (256, 512, 512, 1024, 512, 256)
        self.loc = nn.ModuleList([nn.Conv2d(c, 4, 3, 1, padding=1) for c in source_channels])
        # the first head has three background "max-out" channels and one face channel
        self.conf = nn.ModuleList([nn.Conv2d(c, 4 if i == 0 else 2, 3, 1, padding=1)
                                   for i, c in enumerate(source_channels)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        sources = []
        start = 0
        for end, norm in zip(self.SOURCE_ENDS, (self.L2Norm3_3, self.L2Norm4_3, self.L2Norm5_3)):
            for k in range(start, end):
                x = self.vgg[k](x)
            sources.append(norm(x))
            start = end
        for k in range(start, len(self.vgg)):
            x = self.vgg[k](x)
        sources.append(x)
        for k, layer in enumerate(self.extras):
            x = torch.relu(layer(x))
            if k % 2 == 1:
                sources.append(x)

        locs, confs = [], []
        for i, source in enumerate(sources):
            conf = self.conf[i](source)
            if i == 0:
                background = torch.max(conf[:, 0:3], dim=1, keepdim=True)[0]
                conf = torch.cat((background, conf[:, 3:]), dim=1)
            locs.append(rearrange(self.loc[i](source), "n c h w -> n (h w) c"))
            confs.append(rearrange(conf, "n c h w -> n (h w) c"))
        sizes = [(int(s.shape[2]), int(s.shape[3])) for s in sources]
        return torch.cat(locs, 1), torch.cat(confs, 1), sizes


# ---------------------------------------------------------------------------- box_utils.py
def prior_boxes(image_size: tuple[int, int], feature_sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """PriorBox.forward: float32 [P, 4] (cx, cy, w, h) relative to the network input's (h, w), map by map,
    row by row, one box a cell; computed in float64 as its Python floats are, then rounded to float32."""
    height, width = image_size
    rows = []
    for k, (map_h, map_w) in enumerate(feature_sizes):
        f_kw, f_kh = width / STEPS[k], height / STEPS[k]
        i, j = (v.astype(np.float64) for v in np.divmod(np.arange(map_h * map_w), map_w))  # product(h, w)
        rows.append(np.stack([(j + 0.5) / f_kw, (i + 0.5) / f_kh,
                              np.full_like(j, MIN_SIZES[k] / width), np.full_like(j, MIN_SIZES[k] / height)], 1))
    return torch.from_numpy(np.concatenate(rows).astype(np.float32))


def decode(loc: torch.Tensor, priors: torch.Tensor, variances: Sequence[float] = VARIANCES) -> torch.Tensor:
    """box_utils.decode: offsets [P, 4] against priors (cx, cy, w, h) → corner boxes (x1, y1, x2, y2)."""
    boxes = torch.cat((priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:],
                       priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1])), 1)
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def nms(boxes: torch.Tensor, scores: torch.Tensor, overlap: float = NMS_OVERLAP,
        top_k: int = NMS_TOP_K) -> torch.Tensor:
    """box_utils.nms: indices of the boxes kept, best first, from the `top_k` best (an ascending torch sort,
    taken from its end, as it does); a box goes when its IoU with a kept one is above `overlap`."""
    keep: list[int] = []
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = torch.mul(x2 - x1, y2 - y1)
    _, idx = scores.sort(0)
    idx = idx[-top_k:]
    while idx.numel() > 0:
        i = idx[-1]
        keep.append(int(i))
        if idx.size(0) == 1:
            break
        idx = idx[:-1]
        xx1 = torch.clamp(torch.index_select(x1, 0, idx), min=x1[i])
        yy1 = torch.clamp(torch.index_select(y1, 0, idx), min=y1[i])
        xx2 = torch.clamp(torch.index_select(x2, 0, idx), max=x2[i])
        yy2 = torch.clamp(torch.index_select(y2, 0, idx), max=y2[i])
        inter = torch.clamp(xx2 - xx1, min=0.0) * torch.clamp(yy2 - yy1, min=0.0)
        union = (torch.index_select(area, 0, idx) - inter) + area[i]
        idx = idx[(inter / union).le(overlap)]
    return torch.tensor(keep, dtype=torch.long)


def detect(loc: torch.Tensor, scores: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Detect.forward for one image and the face class: loc [P, 4], face probabilities [P], priors [P, 4] →
    float32 [n, 5] rows (score, x1, y1, x2, y2), relative to the input, best first, n ≤ 750."""
    boxes = decode(loc, priors)
    mask = scores.gt(CANDIDATE_SCORE)
    kept_scores, kept_boxes = scores[mask], boxes[mask]
    ids = nms(kept_boxes, kept_scores)[:KEEP_TOP_K]
    return torch.cat((kept_scores[ids].unsqueeze(1), kept_boxes[ids]), 1)


def nms_numpy(dets: np.ndarray, threshold: float) -> np.ndarray:
    """box_utils.nms_ (py-faster-rcnn's CPU NMS, areas without +1): indices kept of float64 [n, 5] rows."""
    x1, y1, x2, y2, scores = (dets[:, k] for k in range(5))
    areas = (x2 - x1) * (y2 - y1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        xx1, yy1 = np.maximum(x1[i], x1[order[1:]]), np.maximum(y1[i], y1[order[1:]])
        xx2, yy2 = np.minimum(x2[i], x2[order[1:]]), np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1) * np.maximum(0.0, yy2 - yy1)
        overlap = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(overlap <= threshold)[0] + 1]
    return np.array(keep, dtype=np.int64)


# ---------------------------------------------------------------------------- the detector
def network_input(image: np.ndarray, scale: float) -> torch.Tensor:
    """The RGB uint8 [H, W, 3] image as S3FD sees it at `scale`: float32 [1, 3, round(H·s), round(W·s)],
    RGB minus (123, 117, 104)."""
    h, w = image.shape[:2]
    if scale == 1:
        scaled = image  # cv2.resize copies when the size does not change
    else:
        # OpenCV: dsize = (saturate_cast<int>(W·fx), saturate_cast<int>(H·fy)), rounded half to even
        width, height = int(np.rint(w * scale)), int(np.rint(h * scale))
        if width < 1 or height < 1:
            raise ValueError(f"a {w}x{h} image at scale {scale} is {width}x{height} pixels: nothing to look in.")
        scaled = resize_linear(image, width, height, factors=(scale, scale))
    x = rearrange(scaled, "h w c -> c h w").astype(np.float32)
    x -= np.array(MEAN_RGB, np.float32)[:, None, None]
    return torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(0)


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        described = (f"{image.dtype} {tuple(image.shape)}" if isinstance(image, np.ndarray)
                     else type(image).__name__)
        raise ValueError(f"S3FD looks for faces in an RGB uint8 [H, W, 3] image; got {described}.")


class S3FD:
    """syncnet_python's S3FD detector around a network (weights from `load_s3fd`, or any S3FDNet)."""

    def __init__(self, net: S3FDNet, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device) if device is not None else next(net.parameters()).device
        self.net = net.to(self.device).eval()

    @torch.no_grad()
    def raw_outputs(self, image: np.ndarray, scale: float = 1.0
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The network input [1, 3, h, w], loc [P, 4], face probabilities [P] (softmax's column 1) and the
        prior boxes [P, 4], all float32 on the CPU: what detect() is given."""
        _check_image(image)
        x = network_input(image, scale)
        loc, conf, sizes = self.net(x.to(self.device))
        probabilities = torch.softmax(conf, dim=-1)[0, :, 1]
        return x, loc[0].cpu(), probabilities.cpu(), prior_boxes(tuple(x.shape[2:]), sizes)

    @torch.no_grad()
    def detect_faces(self, image: np.ndarray, conf_th: float = 0.8,
                     scales: Sequence[float] = (1,)) -> np.ndarray:
        """Faces in an RGB uint8 [H, W, 3] image: float64 [n, 5] rows (x1, y1, x2, y2, score) in its pixels,
        as the reference's detect_faces returns them (defaults as its signature; run_pipeline.py passes
        conf_th=0.9, scales=[0.25])."""
        _check_image(image)
        h, w = image.shape[:2]
        size = torch.tensor([w, h, w, h], dtype=torch.float32)
        found = [np.empty((0, 5))]
        for s in scales:
            _, loc, probabilities, priors = self.raw_outputs(image, s)
            rows = detect(loc, probabilities, priors)
            n = 0  # its `while detections[0, 1, j, 0] > conf_th`: the prefix above the threshold
            while n < rows.shape[0] and rows[n, 0] > conf_th:
                n += 1
            boxes = (rows[:n, 1:] * size).numpy()
            found.append(np.concatenate([boxes, rows[:n, :1].numpy()], 1).astype(np.float64))
        boxes = np.concatenate(found)
        return boxes[nms_numpy(boxes, MERGE_OVERLAP)]


def load_s3fd(path: str | Path, device: str | torch.device = "cpu") -> S3FD:
    """The S3FD detector with `sfd_face.pth`'s weights: the file read weights-only (no code in it can run),
    every key of S3FDNet there with its shape and nothing else."""
    state = read_strict_state(path, S3FDNet, "S3FD", EXPECTED_FILE)
    net = S3FDNet()
    net.load_state_dict(state, strict=True)
    return S3FD(net, device)
