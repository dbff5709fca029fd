"""Hallo2's video super-resolution network (temporal CodeFormer) and ours on the same random weights.

Hallo2's module definitions (fudan-generative-vision/hallo2, basicsr/archs/codeformer_arch.py with the
vqgan_arch.py it imports, and rrdbnet_arch.py for RealESRGAN) are imported at run time from the checkout
named by HALLO2_PATH, never copied here. Its package `basicsr` imports training, data and CUDA-op code
at import time (torchvision, cv2, tensorboard, compiled deformable convolutions), none of which these
networks run, so only the three arch files are loaded, as modules of a stand-in `basicsr` package:

* `basicsr.utils`: `get_root_logger` (a logging.Logger) and `scandir`; `basicsr.utils.registry`: an
  ARCH_REGISTRY whose `register()` returns the class unchanged;
* for arch_util.py (imported by rrdbnet_arch.py): empty `torchvision`, and `basicsr.ops.dcn` with
  placeholder deformable-conv names (DCNv2Pack subclasses one; RRDBNet never uses it).

The network is built as scripts/video_sr.py builds it (dim_embd 512, codebook 1024, 8 heads, 9 layers,
connect_list 32/64/128/256), every floating tensor drawn at random with a fixed seed (normalisation
scales around 1, the rest around 0, so that zero-initialised layers are not zero), and loaded strictly
into ours. Both run one chunk of 16 aligned 512² faces with w = 0.5 and AdaIN, as video_sr.py calls
`net.inference(crop_image, w=w, adain=True)`; the relative difference max|ours - hallo2| / max|hallo2|
and whether the top-1 codes agree are printed. RealESRGAN's RRDBNet (x2plus layout) is compared on one
frame the same way.

    HALLO2_PATH=/tmp/hallo2 python benchmarks/hallo2_sr_side_by_side.py                 # full size, fp32
    HALLO2_PATH=/tmp/hallo2 python benchmarks/hallo2_sr_side_by_side.py --frames 2   # quicker

The faces are always 512²: Hallo2's CodeFormer hard-codes its 16² code grid (position embedding and
codebook lookup). Full size on a 2-core CPU takes a few minutes and about 8 GB of memory.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import logging
import os
import sys
import time
import types
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emo_pipeline.upscale.codeformer import CodeFormerConfig, HALLO2_SR, TemporalCodeFormer  # noqa: E402
from emo_pipeline.upscale.rrdbnet import REALESRGAN_X2PLUS, RRDBNet  # noqa: E402

HALLO2_COMMIT = "58a9aa6c9f66817a6e084f3874cfc01ac24fed3e"  # the commit this project read and compared against


def hallo2_checkout() -> Path:
    """HALLO2_PATH, checked; exits with a one-line message if it is not a Hallo2 checkout."""
    path = os.environ.get("HALLO2_PATH")
    if not path:
        sys.exit("HALLO2_PATH is not set: set it to a checkout of fudan-generative-vision/hallo2 "
                 "(e.g. git archive of it unpacked into /tmp/hallo2).")
    if not (Path(path) / "basicsr" / "archs" / "codeformer_arch.py").is_file():
        sys.exit(f"HALLO2_PATH={path} is not a Hallo2 checkout (no basicsr/archs/codeformer_arch.py in it).")
    return Path(path)


def _package(name: str, path: Path | None = None) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__path__ = [str(path)] if path else []
    sys.modules[name] = module
    return module


def import_hallo2_sr(path: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """Hallo2's codeformer_arch and rrdbnet_arch modules, loaded from `path` with the stand-ins above."""
    if "basicsr.archs.codeformer_arch" in sys.modules:
        return sys.modules["basicsr.archs.codeformer_arch"], sys.modules["basicsr.archs.rrdbnet_arch"]
    _package("basicsr", path / "basicsr")
    _package("basicsr.archs", path / "basicsr" / "archs")
    utils = _package("basicsr.utils")
    utils.get_root_logger = lambda *a, **k: logging.getLogger("hallo2-basicsr")
    utils.scandir = lambda *a, **k: iter(())
    registry = types.ModuleType("basicsr.utils.registry")

    class _Registry:
        def register(self, obj=None):
            return obj if obj is not None else (lambda cls: cls)

    registry.ARCH_REGISTRY = _Registry()
    sys.modules["basicsr.utils.registry"] = registry
    if importlib.util.find_spec("torchvision") is None:
        sys.modules["torchvision"] = types.ModuleType("torchvision")
    _package("basicsr.ops")
    dcn = types.ModuleType("basicsr.ops.dcn")
    dcn.ModulatedDeformConvPack = nn.Module  # placeholder base class; never instantiated here
    dcn.modulated_deform_conv = None
    sys.modules["basicsr.ops.dcn"] = dcn
    if importlib.util.find_spec("distutils") is None:  # Python 3.12 dropped it; arch_util imports LooseVersion
        distutils, version = _package("distutils"), types.ModuleType("distutils.version")
        version.LooseVersion = str
        distutils.version = version
        sys.modules["distutils.version"] = version
    codeformer = importlib.import_module("basicsr.archs.codeformer_arch")
    rrdbnet = importlib.import_module("basicsr.archs.rrdbnet_arch")
    return codeformer, rrdbnet


def build_hallo2_codeformer(codeformer_arch: types.ModuleType, cfg: CodeFormerConfig = HALLO2_SR) -> nn.Module:
    """As scripts/video_sr.py builds it (its CodeFormer hard-codes the VQGAN's 512², nf 64 and ch_mult)."""
    return codeformer_arch.CodeFormer(dim_embd=cfg.dim_embd, codebook_size=cfg.codebook_size, n_head=cfg.n_head,
                                      n_layers=cfg.n_layers, connect_list=list(cfg.connect_list))


def build_hallo2_rrdbnet(rrdbnet_arch: types.ModuleType) -> nn.Module:
    """As scripts/video_sr.py's set_realesrgan builds it."""
    return rrdbnet_arch.RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=2)


def randomise(net: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.state_dict().items():
            if not p.is_floating_point():
                continue
            norm_weight = name.endswith("weight") and p.ndim == 1
            scale = 0.02 if p.ndim < 2 else (1.0 / p[0].numel()) ** 0.5
            noise = torch.randn(p.shape, generator=gen) * (0.1 if norm_weight else scale)
            p.copy_(noise + (1.0 if norm_weight else 0.0))


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=16, help="frames in the chunk (Hallo2: 16)")
    parser.add_argument("--w", type=float, default=0.5, help="fidelity weight (video_sr.py's default 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-realesrgan", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    path = hallo2_checkout()
    codeformer_arch, rrdbnet_arch = import_hallo2_sr(path)
    theirs = build_hallo2_codeformer(codeformer_arch).eval()
    randomise(theirs, args.seed)
    ours = TemporalCodeFormer(HALLO2_SR).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)

    gen = torch.Generator().manual_seed(args.seed + 1)
    # smooth random faces in -1..1: low-frequency noise upsampled, so the encoder sees image-like input
    faces = torch.nn.functional.interpolate(torch.rand(args.frames, 3, 32, 32, generator=gen),
                                            size=(512, 512), mode="bicubic", align_corners=False)
    faces = (faces * 2 - 1).clamp(-1, 1)[None]
    start = time.perf_counter()
    with torch.no_grad():
        expected, top_idx = theirs.inference(faces, w=args.w, adain=True)
    t_theirs = time.perf_counter() - start
    start = time.perf_counter()
    got, codes = ours(faces, w=args.w, adain_codes=True, frames_at_once=4, return_codes=True)
    t_ours = time.perf_counter() - start
    print(f"CodeFormer ({args.frames} frames of 512², w={args.w}, fp32): relative difference "
          f"{relative(got, expected):.3e} (max|ours - hallo2| / max|hallo2|); max|hallo2| "
          f"{expected.abs().max().item():.3f}; top-1 codes equal: "
          f"{(codes == top_idx[..., 0]).float().mean().item():.2%}; Hallo2 {t_theirs:.1f} s, ours {t_ours:.1f} s")

    if not args.skip_realesrgan:
        theirs_bg = build_hallo2_rrdbnet(rrdbnet_arch).eval()
        randomise(theirs_bg, args.seed + 2)
        ours_bg = RRDBNet(REALESRGAN_X2PLUS).eval()
        ours_bg.load_state_dict(theirs_bg.state_dict(), strict=True)
        frame = (faces[0, 0:1] + 1) / 2
        with torch.no_grad():
            expected = theirs_bg(frame)
        got = ours_bg(frame)
        print(f"RealESRGAN x2plus (one 512² frame, fp32): relative difference {relative(got, expected):.3e}")


if __name__ == "__main__":
    main()
