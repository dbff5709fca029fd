"""Run by tests/test_training.py under `torchrun --nproc_per_node 2`: trains a few steps with
accelerate on the CPU (gloo) and writes each rank's weight checksum."""

import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emo_pipeline.training.trainer import TrainSettings, train  # noqa: E402

data, out = sys.argv[1], Path(sys.argv[2])
_, net = train(TrainSettings(data=data, out=str(out), stage=2, steps=3, batch_size=1, lr=1e-3, save_every=100),
               log=lambda *_: None)
digest = hashlib.sha256()
for name, tensor in sorted(net.state_dict().items()):
    digest.update(name.encode() + tensor.detach().float().contiguous().numpy().tobytes())
from accelerate import PartialState  # noqa: E402

state = PartialState()
(out / f"rank{state.process_index}.sha256").write_text(f"{state.num_processes} {digest.hexdigest()}")
