"""Write tests/data/s3fd_keys.tsv: the state-dict keys and shapes of syncnet_python's S3FD network.

syncnet_python's own module definition (joonson/syncnet_python at commit 6efbb1c, MIT, detectors/s3fd/nets.py's
S3FDNet, imported at run time from the checkout named by SYNCNET_PATH, never copied here) is built on the meta
device, as its S3FD class builds it before `load_state_dict(torch.load('sfd_face.pth'))` (strict: the file holds
exactly these keys, flat). The keys are written one a line, in make_hallo_keys.py's format:

    network<TAB>key<TAB>shape          shape: comma-separated

sorted, under `#` header lines. Nothing is read from sfd_face.pth.

    SYNCNET_PATH=/path/to/syncnet_python python tests/make_s3fd_keys.py

(nets.py imports only torch; detectors/s3fd/__init__.py, which imports cv2 and torchvision, is not run.)
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from reference_common import checkout_path, network_rows, write_key_list  # noqa: E402

OUTPUT = ROOT / "tests" / "data" / "s3fd_keys.tsv"
COMMIT = "6efbb1c305c23f47a62b09cf4215a8ac45e97d49"


def import_nets(path: Path):
    """detectors/s3fd/nets.py and its box_utils as a package of their own, without running __init__.py."""
    folder = path / "detectors" / "s3fd"
    package = types.ModuleType("s3fd_reference")
    package.__path__ = [str(folder)]
    sys.modules["s3fd_reference"] = package
    for name in ("box_utils", "nets"):
        spec = importlib.util.spec_from_file_location(f"s3fd_reference.{name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["s3fd_reference.nets"]


def main() -> None:
    path = checkout_path(None, "SYNCNET_PATH", "detectors/s3fd/nets.py", "joonson/syncnet_python")
    nets = import_nets(path)
    with torch.device("meta"):
        net = nets.S3FDNet(device="cpu")
    rows, line, _, _ = network_rows("s3fd", net)
    rows.sort()
    header = [
        "# syncnet_python's S3FD network state-dict keys: network<TAB>key<TAB>shape, sorted; sfd_face.pth holds",
        "#   these keys, flat (its S3FD class loads the file with load_state_dict, strict).",
        f"# Built from detectors/s3fd/nets.py's S3FDNet of joonson/syncnet_python at commit {COMMIT}, on the",
        "#   meta device; NOT read from sfd_face.pth.",
        f"# Built with torch {torch.__version__.split('+')[0]}.",
        "# Generator: tests/make_s3fd_keys.py (imports nets.py from SYNCNET_PATH at run time).",
        line,
    ]
    write_key_list(OUTPUT, header, rows, [line], ROOT)


if __name__ == "__main__":
    main()
