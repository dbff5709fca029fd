"""Write tests/data/exact_frames.safetensors: frames of the exact (Hallo-default) path on tiny
random models, the regression reference of tests/test_exact_path.py.

The stored file was written at commit dcd40c4, before the speed work of issue 10, so the test
checks that the optimised exact path still gives the frames of the original, unoptimised code.
Rerun it only on purpose (it overwrites that reference):  python tests/make_exact_fixture.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import speech_like  # noqa: E402
from emo_pipeline.config import tiny_config, tiny_emo_config  # noqa: E402
from emo_pipeline.pipeline import EMOPipeline  # noqa: E402
from emo_pipeline.sampling.steps import SamplingOptions  # noqa: E402
from emo_pipeline.tiny import tiny_components  # noqa: E402

FIXTURE = ROOT / "tests" / "data" / "exact_frames.safetensors"

# name → (config, sampling options); 0.4 s at 25 fps = 10 frames = 3 clips of 4 (motion frames used)
CASES = {
    "hallo": (tiny_config(), dict(seed=5, steps=3, guidance_scale=2.0)),
    "hallo2": (tiny_config(name="tiny-hallo2", motion_frame_mask_rate=0.25), dict(seed=6, steps=3, guidance_scale=2.5)),
    "emo": (tiny_emo_config(), dict(seed=7, steps=3, guidance_scale=2.0, head_speed=0.03)),
}


def portrait_image() -> torch.Tensor:
    return torch.rand(96, 96, 3, generator=torch.Generator().manual_seed(0))


def generate(name: str, **option_overrides) -> torch.Tensor:
    config, options = CASES[name]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same reduction order every time
    try:
        pipe = EMOPipeline(*tiny_components(config, seed=1))
        portrait = pipe.prepare_portrait(portrait_image(), face_box=(0.25, 0.2, 0.75, 0.8))
        audio = pipe.encode_audio(speech_like(0.4, seed=2), 16000)
        return pipe.generate(portrait, audio, SamplingOptions(**{**options, **option_overrides}))
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    FIXTURE.parent.mkdir(exist_ok=True)
    save_file({name: generate(name).contiguous() for name in CASES}, FIXTURE)
    print(f"wrote {FIXTURE}")
