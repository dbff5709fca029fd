"""Write tests/data/echomimic_keys.tsv: the state-dict keys and shapes of EchoMimic's networks
(with --v2: tests/data/echomimic_v2_keys.tsv, EchoMimic v2's; see the end of this docstring).

EchoMimic's own module definitions (antgroup/echomimic at commit a53e970, imported at run time
from the checkout named by ECHOMIMIC_PATH, never copied here) are built on the meta device
exactly as its infer_audio2vid.py builds them, at full size, and their state-dict keys (parameters
and persistent buffers, such as the motion modules' pos_encoder.pe) are written one a line:

    network<TAB>key<TAB>shape          network: reference_unet, denoising_unet or face_locator
                                       shape: comma-separated, empty for a 0-dim tensor

sorted, under `#` header lines giving the commit, the configs and the counts. Nothing is read
from EchoMimic's released .pth files.

    ECHOMIMIC_PATH=/path/to/echomimic PYTHONPATH=/path/to/einops+omegaconf python tests/make_echomimic_keys.py

* reference_unet: src/models/unet_2d_condition.UNet2DConditionModel from the UNet config of
  sd-image-variations-diffusers (written out as SD_IMAGE_VARIATIONS_UNET_CONFIG in
  benchmarks/echomimic_reference.py: the Stable Diffusion 1.5 UNet layout, cross-attention 768).
* denoising_unet: src/models/unet_3d_echo.EchoUNet3DConditionModel as from_pretrained_2d builds it
  (the same config with the 3-D block types) with unet_additional_kwargs of
  configs/inference/inference_v2.yaml.
* face_locator: src/models/face_locator.FaceLocator(320, conditioning_channels=1,
  block_out_channels=(16, 32, 96, 256)).

The motion-module keys are the denoising UNet's keys containing ".motion_modules.". EchoMimic
loads motion_module.pth merged with the 2-D weights and then denoising_unet.pth with
strict=False, so which of the two released files holds which key is not given by its code: the
file lists the denoising UNet's full key set and counts the motion-module part in the header.

The imports and their shims (run-time aliases for names today's diffusers moved or renamed,
and the device patch of the reference-attention hooks) are those of
benchmarks/echomimic_reference.py; see its docstring for each shim and why it is needed.

--v2: EchoMimic v2 (antgroup/echomimic_v2 at commit a312dec, from the checkout named by
ECHOMIMIC_V2_PATH), its networks built as its infer.py builds them (benchmarks/echomimic_v2_reference.py):
UNet2DConditionModel from the same config, EMOUNet3DConditionModel.from_pretrained_2d with the
unet_additional_kwargs of its configs/inference/inference_v2.yaml, PoseEncoder(320,
conditioning_channels=3, block_out_channels=(16, 32, 96, 256)); the networks are named as its files
name them: reference_unet, denoising_unet, pose_encoder (our engine reads pose_encoder.pth into the
part it calls face_locator).

    ECHOMIMIC_V2_PATH=/path/to/echomimic_v2 PYTHONPATH=/path/to/einops+omegaconf \
        python tests/make_echomimic_keys.py --v2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import diffusers
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import echomimic_reference as er  # noqa: E402
from reference_common import network_rows, write_key_list  # noqa: E402

OUTPUT = ROOT / "tests" / "data" / "echomimic_keys.tsv"
OUTPUT_V2 = ROOT / "tests" / "data" / "echomimic_v2_keys.tsv"
MOTION = ".motion_modules."


def build_lines(version: er.Version, settings: dict) -> list[str]:
    """The header lines that say how each network was built."""
    config = json.dumps(er.SD_IMAGE_VARIATIONS_UNET_CONFIG)
    kwargs = json.dumps(settings["unet_additional_kwargs"])
    if version is er.V1:
        return [
            "# reference_unet: src.models.unet_2d_condition.UNet2DConditionModel.from_config(<config>), <config> being",
            "#   unet/config.json of sd-image-variations-diffusers (the SD1.5 UNet config): " + config,
            "# denoising_unet: src.models.unet_3d_echo.EchoUNet3DConditionModel.from_config(<same config with> "
            + json.dumps(er.ECHO_3D_BLOCKS) + ",",
            "#   **unet_additional_kwargs of configs/inference/inference_v2.yaml): " + kwargs + ")  (as from_pretrained_2d)",
            "# face_locator: src.models.face_locator.FaceLocator(320, conditioning_channels=1, "
            "block_out_channels=(16, 32, 96, 256))",
        ]
    module, cls = version.unet_3d
    locator_module, locator_cls = version.locator
    args = dict(version.locator_args)
    return [
        "# reference_unet: src.models.unet_2d_condition.UNet2DConditionModel.from_config(<config>), <config> being",
        "#   unet/config.json of sd-image-variations-diffusers (the SD1.5 UNet config): " + config,
        f"# denoising_unet: src.{module}.{cls}.from_pretrained_2d(<a folder with that config as unet/config.json and "
        "no weights>,",
        "#   <no motion module file>, subfolder='unet', unet_additional_kwargs=<configs/inference/inference_v2.yaml's>: "
        + kwargs + ")",
        f"# {version.locator_name}: src.{locator_module}.{locator_cls}({args['conditioning_embedding_channels']}, "
        f"conditioning_channels={args['conditioning_channels']}, block_out_channels={tuple(args['block_out_channels'])})"
        " (our engine's face_locator)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--v2", action="store_true", help="EchoMimic v2's networks (ECHOMIMIC_V2_PATH)")
    args = parser.parse_args()
    if args.v2:
        import echomimic_v2_reference

        version = echomimic_v2_reference.V2
    else:
        version = er.V1
    output = OUTPUT_V2 if args.v2 else OUTPUT
    echo = er.load_echomimic(version=version)
    settings = er.inference_settings(echo)
    with torch.device("meta"):
        nets = er.construct_networks(echo)

    rows: list[tuple[str, str, str]] = []
    summary: list[str] = []
    for name, net in zip(version.network_names, nets):
        net_rows, line, state, buffers = network_rows(name, net)
        rows += net_rows
        total = sum(v.numel() for v in state.values())
        summary.append(line)
        if name == "denoising_unet":
            motion = {k: v for k, v in state.items() if MOTION in k}
            motion_buffers = [k for k in motion if k in buffers]
            m_total = sum(v.numel() for v in motion.values())
            m_buf = sum(motion[k].numel() for k in motion_buffers)
            summary.append(f"#   of which motion-module keys (containing '{MOTION}'): {len(motion)} tensors, "
                           f"{m_total:,} values ({len(motion) - len(motion_buffers)} parameters with "
                           f"{m_total - m_buf:,} values, {len(motion_buffers)} pos_encoder.pe buffers with "
                           f"{m_buf:,} values); the rest: {len(state) - len(motion)} tensors, "
                           f"{total - m_total:,} values")
    rows.sort()

    option = " --v2" if args.v2 else ""
    header = [
        f"# {version.name}'s network state-dict keys: network<TAB>key<TAB>shape (shape empty for a 0-dim tensor), "
        "sorted.",
        f"# Built from the module definitions of {version.repository} at commit {version.commit}, on the meta",
        f"# device, as {version.script} builds the networks; NOT read from the released .pth files.",
        "# Keys are state_dict() keys: parameters and persistent buffers (the motion modules' pos_encoder.pe).",
        f"# Built with torch {torch.__version__.split('+')[0]} and diffusers {diffusers.__version__} (module names"
        " such as attention's to_out.0 come from diffusers).",
        f"# Generator: tests/make_echomimic_keys.py{option} (imports {version.name}'s code from {version.variable} at "
        "run time).",
        *build_lines(version, settings),
        f"# {version.name} loads motion_module.pth merged with the 2-D weights, then denoising_unet.pth with "
        "strict=False:",
        "#   which released file holds which denoising_unet key is not given by its code; the motion-module keys",
        f"#   are the denoising_unet keys containing '{MOTION}'.",
        *summary,
        f"# all: {len(rows)} tensors",
    ]
    write_key_list(output, header, rows, summary, ROOT)


if __name__ == "__main__":
    main()
