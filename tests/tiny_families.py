"""The families' full-size presets swapped for the tiny ones in the loader, so that files in a family's own
layout and names, with tiny shapes, load as that family (the download tests' hub serves such files).

In-process: `install(monkeypatch)`. As a command: `python tests/tiny_families.py <emo_pipeline arguments>`
runs the real command line with the swap made.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emo_pipeline.config import (tiny_config, tiny_echomimic_config, tiny_echomimic_v2_config,  # noqa: E402
                                 tiny_joyhallo_config, tiny_memo_config)
from emo_pipeline.audio import emotion  # noqa: E402
from emo_pipeline.download import checks  # noqa: E402
from emo_pipeline.io import loading  # noqa: E402
from emo_pipeline.upscale.codeformer import tiny_codeformer_config  # noqa: E402
from emo_pipeline.upscale.rrdbnet import tiny_rrdb_config  # noqa: E402

TINY = {
    "hallo_config": lambda: tiny_config(name="hallo"),
    "hallo2_config": lambda: tiny_config(name="hallo2", motion_frame_mask_rate=0.25),
    "joyhallo_config": lambda: tiny_joyhallo_config(name="joyhallo"),
    "echomimic_config": lambda: tiny_echomimic_config(name="echomimic"),
    "echomimic_acc_config": lambda: tiny_echomimic_config(name="echomimic-acc", steps=2, guidance_scale=1.0),
    "echomimic_v2_config": lambda: tiny_echomimic_v2_config(name="echomimic-v2"),
    "echomimic_v2_acc_config": lambda: tiny_echomimic_v2_config(name="echomimic-v2-acc", steps=2, guidance_scale=1.0),
    "memo_config": lambda resnet_joint_frames=True: tiny_memo_config(name="memo", resnet_joint_frames=resnet_joint_frames),
}


# What the download's content check holds Hallo2's upscaler files to.
TINY_UPSCALER = {"codeformer_config": tiny_codeformer_config, "rrdb_config": tiny_rrdb_config}


# MEMO's emotion detector: a tiny emotion2vec is taken for the large one it stands for
TINY_EMOTION = {"ENCODER_SHAPE": None}


def install(monkeypatch=None, module=loading, check_module=checks, emotion_module=emotion) -> None:
    """In `module` (the engine's loading module; the pack's own copy when ComfyUI loaded it), `check_module`
    (the download's checks, likewise) and `emotion_module` (MEMO's emotion detector)."""
    for target, table in ((module, TINY), (check_module, TINY_UPSCALER), (emotion_module, TINY_EMOTION)):
        for name, make in table.items():
            if monkeypatch is not None:
                monkeypatch.setattr(target, name, make)
            else:
                setattr(target, name, make)


if __name__ == "__main__":
    install()
    from emo_pipeline.cli import main

    sys.exit(main(sys.argv[1:]))


def patch_when_imported() -> None:
    """For a real ComfyUI, which imports the pack under a path-derived name: patch every copy of the engine's
    loading module now, and each one imported later (custom nodes load in no fixed order)."""
    import importlib.abc
    import importlib.util

    def patch(module) -> None:
        for name, make in TINY.items():
            setattr(module, name, make)

    for name, module in list(sys.modules.items()):
        if name.endswith(".emo_pipeline.io.loading") or name == "emo_pipeline.io.loading":
            patch(module)

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if not fullname.endswith(".emo_pipeline.io.loading"):
                return None
            sys.meta_path.remove(self)
            try:
                spec = importlib.util.find_spec(fullname)
            finally:
                sys.meta_path.insert(0, self)
            if spec is None or spec.loader is None:
                return spec
            execute = spec.loader.exec_module

            def exec_module(module):
                execute(module)
                patch(module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Finder())
