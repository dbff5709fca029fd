"""Write tests/data/syncnet_keys.tsv: the state-dict keys and shapes of syncnet_python's SyncNet (SyncNetModel.S).

syncnet_python's own module definition (joonson/syncnet_python, imported at run time from the checkout named by
SYNCNET_PATH, never copied here) is built on the meta device as SyncNetInstance builds it, S(num_layers_in_fc_layers
= 1024), and its keys are written one a line in make_hallo_keys.py's format:

    network<TAB>key<TAB>shape          shape: comma-separated, empty for a 0-dim tensor

sorted, under `#` header lines giving the commit and the counts. The network is named after its weight file,
syncnet_v2 (syncnet_v2.model, a flat state dict that SyncNetInstance.loadParameters copies into S's state_dict by
these names). Nothing is read from the released file. The BatchNorm layers' num_batches_tracked counters are S's
keys in today's torch; a file saved before torch 0.4.1 has none, and loadParameters copies only what the file holds.

    SYNCNET_PATH=/path/to/syncnet_python python tests/make_syncnet_keys.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from reference_common import checkout_path, network_rows, write_key_list  # noqa: E402

OUTPUT = ROOT / "tests" / "data" / "syncnet_keys.tsv"
REPOSITORY = "joonson/syncnet_python"


def commit_of(path: Path) -> str:
    """The checkout's commit, or the SYNCNET_COMMIT given for an exported tree."""
    if os.environ.get("SYNCNET_COMMIT"):
        return os.environ["SYNCNET_COMMIT"]
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (set SYNCNET_COMMIT)"


def main() -> None:
    path = checkout_path(None, "SYNCNET_PATH", "SyncNetModel.py", REPOSITORY)
    sys.path.insert(0, str(path))
    import SyncNetModel  # noqa: E402  (its module, by file name; needs only torch)

    with torch.device("meta"):
        net = SyncNetModel.S(num_layers_in_fc_layers=1024)
    rows, line, state, _ = network_rows("syncnet_v2", net)
    rows.sort()
    tracked = [k for k in state if k.endswith(".num_batches_tracked")]
    header = [
        "# syncnet_python's SyncNet state-dict keys: network<TAB>key<TAB>shape (shape empty for a 0-dim tensor),",
        "#   sorted;",
        "#   the network is named after its weight file (syncnet_v2.model holds these keys, flat).",
        f"# Built from SyncNetModel.S(num_layers_in_fc_layers=1024) of {REPOSITORY} at commit {commit_of(path)},",
        "#   on the meta device; NOT read from syncnet_v2.model.",
        f"# Built with torch {torch.__version__.split('+')[0]}; {len(tracked)} of the keys are BatchNorm "
        "num_batches_tracked counters (0-dim),",
        "#   which torch before 0.4.1 did not save and inference does not use.",
        "# Generator: tests/make_syncnet_keys.py (imports syncnet_python's SyncNetModel from SYNCNET_PATH at run",
        "#   time).",
        line,
        f"# all: {len(rows)} tensors, {sum(v.numel() for v in state.values()):,} values",
    ]
    write_key_list(OUTPUT, header, rows, [line], ROOT)


if __name__ == "__main__":
    main()
