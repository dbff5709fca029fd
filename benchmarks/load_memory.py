"""Peak CPU memory while loading a full-size network, against the size of the file in the target dtype.

    python benchmarks/load_memory.py [--dir DIR] [--source-dtype fp16] [--target-dtype fp16] [--pth]

Writes a full-size `hallo` network with random weights (tensor by tensor, never the whole model
at once), then loads it in a fresh process with `load_net` and reports that process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emo_pipeline.config import hallo_config  # noqa: E402
from emo_pipeline.io.loading import expected_shapes, network_metadata, write_safetensors  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def write_random(path: Path, dtype: torch.dtype, pth: bool) -> None:
    config = hallo_config()
    shapes = expected_shapes(config)

    def tensor(key: str) -> torch.Tensor:
        gen = torch.Generator().manual_seed(hash(key) % 2**31)
        return (torch.randn(shapes[key], generator=gen, dtype=torch.float32) * 0.02).to(dtype)

    if pth:
        torch.save({k: tensor(k) for k in shapes}, path)
    else:
        write_safetensors(path, {k: (s, dtype) for k, s in shapes.items()}, tensor, network_metadata(config))


def peak_rss() -> int:
    """VmHWM: this process's peak resident memory (unlike ru_maxrss it does not carry over from the
    parent across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(path: str, dtype: str) -> None:
    from emo_pipeline.io.loading import load_net

    base = peak_rss()
    start = time.perf_counter()
    net = load_net(path, dtype=DTYPES[dtype])
    seconds = time.perf_counter() - start
    # Read every weight once (as moving to a GPU or running would): memory-mapped pages count from here.
    for t in net.state_dict().values():
        t.abs().max()
    model_bytes = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    peak = peak_rss()
    print(json.dumps({"seconds": seconds, "baseline": base, "peak": peak, "model_bytes": model_bytes}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "emo-bench"),
                        help="where the random checkpoint is written and kept (default: %(default)s)")
    parser.add_argument("--source-dtype", default="fp16", choices=list(DTYPES))
    parser.add_argument("--target-dtype", default="fp16", choices=list(DTYPES))
    parser.add_argument("--pth", action="store_true", help="a pickled net.pth instead of safetensors")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)

    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"hallo-random-{args.source_dtype}.{'pth' if args.pth else 'safetensors'}"
    if not path.exists():
        print(f"writing {path} ...", flush=True)
        start = time.perf_counter()
        write_random(path, DTYPES[args.source_dtype], args.pth)
        print(f"  {path.stat().st_size / 2**30:.2f} GiB in {time.perf_counter() - start:.0f} s", flush=True)
    out = subprocess.run([sys.executable, __file__, "--child", str(path), args.target_dtype],
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    gib = 2**30
    print(f"load {path.name} as {args.target_dtype} on the CPU: {r['seconds']:.1f} s")
    print(f"  model in target dtype  {r['model_bytes'] / gib:6.2f} GiB")
    print(f"  file on disk           {path.stat().st_size / gib:6.2f} GiB")
    print(f"  process baseline RSS   {r['baseline'] / gib:6.2f} GiB (python, torch, diffusers)")
    print(f"  peak RSS               {r['peak'] / gib:6.2f} GiB = {r['peak'] / r['model_bytes']:.2f}× the model "
          f"in the target dtype (target: below 1.3×)")


if __name__ == "__main__":
    main()
