"""Write tests/data/memo_keys.tsv: the state-dict keys and shapes of MEMO's networks.

MEMO's own module definitions (memoavatar/memo at commit a5aee30, Apache-2.0, imported at run time
from the checkout named by MEMO_PATH, never copied here) are built on the meta device at full size,
as its inference.py builds them, and their state-dict keys (parameters and persistent buffers, such
as the motion modules' pos_encoder.pe) are written one a line:

    network<TAB>key<TAB>shape          network: reference_net, diffusion_net, image_proj, audio_proj
                                                or audio_emotion_classifier
                                       shape: comma-separated, empty for a 0-dim tensor

sorted, under `#` header lines giving the commit, the configs and the counts. Nothing is read
from MEMO's released safetensors files.

    MEMO_PATH=/path/to/memo PYTHONPATH=/path/to/einops python tests/make_memo_keys.py

(A checkout, or `git archive` of one: only memo/models/ is imported. Its code needs `einops`;
xformers is not needed, see the stand-in below.)

Where the networks come from (inference.py:142-154 loads each with `from_pretrained(
"memoavatar/memo", subfolder=...)`; the config.json files live in that Hugging Face repository,
not in the code repository, so each config is written out below with the source of every value):

* reference_net: memo.models.unet_2d_condition.UNet2DConditionModel.from_config(SD15_UNET_CONFIG)
  (benchmarks/reference_common.py: the Stable Diffusion 1.5 UNet config). Values and sources:
  - cross_attention_dim 768: FORCED by the code. The reference net's attn2 gets the image_proj
    tokens (video_pipeline.py:179-183, 228-233), whose width is ImageProjModel's
    cross_attention_dim, 768 (image_proj.py:7; image_proj/config.json holds no value, see below).
    The class default (1280, unet_2d_condition.py:191) cannot be the released one.
  - block_out_channels 320/640/1280/1280, layers_per_block 2, attention_head_dim 8, norm 32/1e-5,
    the down/mid/up block types, use_linear_projection false, in_channels 4: the class defaults
    (unet_2d_condition.py:161-217), equal to SD 1.5's. Forced to match the diffusion net: the
    reference features are used channel for channel by the diffusion net's spatial attention and
    motion modules (unet_3d_blocks.py:515-568), and the latents are 4-channel VAE latents.
  - The released reference_net/config.json (1.71 kB) was NOT available offline. Check: the
    parameter count below, times 4 bytes (the released files are fp32: image_proj's 6.31 MB and
    audio_proj's 146 MB match their fp32 parameter counts exactly), is about 3.43 GB, the size
    the hub lists for reference_net/diffusion_pytorch_model.safetensors.
  - This class never builds conv_norm_out/conv_out (unet_2d_condition.py:589-601 sets
    conv_norm_out to None and has no conv_out), and its last up block's last transformer
    (is_final_block) has no proj_out and its block no attn1/attn2/norm2/norm3/ff
    (transformer_2d.py:144-148, attention.py:105-160): those keys are absent.
* diffusion_net: memo.models.unet_3d.UNet3DConditionModel.from_config(MEMO_DIFFUSION_NET_CONFIG).
  The released diffusion_net/config.json (2.25 kB) was seen only in part (a text excerpt of
  the hub's page of camenduru/memo, a mirror of memoavatar/memo, diffusers 0.31.0): it gives
  in_channels 4, cross_attention_dim 768, audio_attention_dim 768, attention_head_dim 8,
  block_out_channels 320/640/1280/1280, layers_per_block 2, the down block types, mid block
  UNetMidBlock3DCrossAttn, flip_sin_to_cos true, freq_shift 0, act_fn silu, dual_cross_attention
  false, emo_drop_rate 0.05, motion_module_kwargs {num_attention_heads 8, num_transformer_block 1,
  attention_block_types [Temporal_Self, Temporal_Self], temporal_position_encoding true,
  temporal_position_encoding_max_len 32, temporal_attention_dim_div 1} and
  motion_module_resolutions [1, 2, 4, 8]. ASSUMED (the rest of the file was not seen): the up
  block types, norm_num_groups 32, norm_eps 1e-5, out_channels 4, use_linear_projection false,
  upcast_attention false, only_cross_attention false, downsample_padding 1,
  mid_block_scale_factor 1, resnet_time_scale_shift "default": SD 1.5's values, which are also
  the class defaults (unet_3d.py:33-78) except out_channels (default 8), which the pipeline
  forces to 4 (the prediction steps the 4-channel latents, video_pipeline.py:275-279).
  use_inflated_groupnorm and unet_use_cross_frame_attention/unet_use_temporal_attention change no
  key (InflatedGroupNorm is a GroupNorm; Transformer3DModel never passes the temporal-attention
  flag on, transformer_3d.py:98-108): use_inflated_groupnorm is left at the class default (false)
  here, its released value is UNKNOWN and it changes the numbers (ResnetBlock3D normalises over
  all frames together when false, per frame when true: resnet.py:141-161).
  Check: parameters times 4 bytes is about 6.71 GB, the hub's size of its safetensors.
  emo_drop_rate only matters for the keys through being > 0: each EmoAdaLayerNorm's
  class_embedder.embedding_table then has 9 + 1 rows (attention.py:437-438), the extra row being
  the "no emotion" label 9 that the unconditional branch uses (video_pipeline.py:244).
* image_proj: memo.models.image_proj.ImageProjModel() with its defaults (768, 512, 4).
  Its __init__ has no @register_to_config, so the released image_proj/config.json is only
  {_class_name, _diffusers_version} (72 bytes on the hub) and from_pretrained builds the
  defaults. Check: 1,577,472 values = 6.31 MB in fp32, the hub's size.
* audio_proj: memo.models.audio_proj.AudioProjModel() with its defaults (seq_len 5, blocks 12,
  channels 768, intermediate_dim 512, output_dim 768, context_tokens 32); config.json is again
  only {_class_name, _diffusers_version} (seen on the hub). Check: 146 MB in fp32.
* audio_emotion_classifier (not one of the four networks of the pipeline, but MEMO's own weights:
  misc/audio_emotion_classifier, loaded by memo/utils/audio_utils.py:189-193):
  memo.models.emotion_classifier.AudioEmotionClassifierModel() with its defaults (5 layers, 2048
  channels, 9 classes); config.json holds no value (85 bytes). Check: 58.8 MB in fp32.

Run-time shims (they change nothing in the checkout; MEMO's modules are imported without writing
__pycache__ into it):

* xformers stand-in: memo/models/motion_module.py:4-5 imports xformers and xformers.ops at
  import time; they are only used when memory-efficient attention is switched on (which builds
  no parameter). Empty modules are registered under those names after diffusers is imported, so
  diffusers still reports no xformers (as benchmarks/hallo_side_by_side.py does for Hallo).
* Nothing else: MEMO pins diffusers 0.31.0, and its model modules import as they are with
  today's diffusers (the generator prints the version it ran with). Notices of today's diffusers
  about unexpected config keys and deprecations are silenced by `quiet()`.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import diffusers
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from reference_common import (  # noqa: E402
    SD15_UNET_CONFIG, checkout_path, install_xformers_stand_in, network_rows, quiet, write_key_list)

OUTPUT = ROOT / "tests" / "data" / "memo_keys.tsv"
MEMO_COMMIT = "a5aee30120d7d2fc4e0831ca61cebdbce595324b"
MOTION = ".motion_modules."
AUDIO = ".audio_modules."

# reference_net: the SD 1.5 UNet config (see the docstring for why each value holds).
MEMO_REFERENCE_NET_CONFIG = dict(SD15_UNET_CONFIG)

# diffusion_net: what the released config.json is known to hold, then the assumed rest.
MEMO_DIFFUSION_NET_SEEN = {
    "_class_name": "UNet3DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "audio_attention_dim": 768,
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "emo_drop_rate": 0.05,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock3DCrossAttn",
    "motion_module_kwargs": {
        "attention_block_types": ["Temporal_Self", "Temporal_Self"],
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "temporal_attention_dim_div": 1,
        "temporal_position_encoding": True,
        "temporal_position_encoding_max_len": 32,
    },
    "motion_module_resolutions": [1, 2, 4, 8],
}
MEMO_DIFFUSION_NET_ASSUMED = {
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "only_cross_attention": False,
    "out_channels": 4,
    "resnet_time_scale_shift": "default",
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
    "upcast_attention": False,
    "use_inflated_groupnorm": False,  # changes no key; released value unknown (see the docstring)
    "use_linear_projection": False,
}
MEMO_DIFFUSION_NET_CONFIG = {**MEMO_DIFFUSION_NET_SEEN, **MEMO_DIFFUSION_NET_ASSUMED}

NETWORK_NAMES = ("reference_net", "diffusion_net", "image_proj", "audio_proj", "audio_emotion_classifier")
# The hub's file sizes of each network's diffusion_pytorch_model.safetensors (decimal units, as
# listed there), for the fp32 check in the header.
HUB_SIZES = {"reference_net": "3.43 GB", "diffusion_net": "6.71 GB", "image_proj": "6.31 MB",
             "audio_proj": "146 MB", "audio_emotion_classifier": "58.8 MB"}


def memo_path(path: str | os.PathLike | None = None) -> Path:
    """`path`, else MEMO_PATH, checked to be a MEMO checkout."""
    return checkout_path(path, "MEMO_PATH", "memo/models/unet_3d.py", "memoavatar/memo")


def load_memo(path: str | os.PathLike | None = None) -> types.SimpleNamespace:
    """MEMO's model classes, imported from the checkout at `path` (default MEMO_PATH)."""
    path = memo_path(path)
    if importlib.util.find_spec("einops") is None:
        raise RuntimeError("MEMO's code needs einops: pip install einops")
    loaded = sys.modules.get("memo")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve().parent != path / "memo":
        raise RuntimeError(f"another package named 'memo' is imported already ({loaded!r})")
    install_xformers_stand_in()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # leave the checkout as it is
    try:
        with quiet():
            module = lambda name: importlib.import_module(f"memo.models.{name}")  # noqa: E731
            return types.SimpleNamespace(
                path=path,
                UNet2DConditionModel=module("unet_2d_condition").UNet2DConditionModel,
                UNet3DConditionModel=module("unet_3d").UNet3DConditionModel,
                ImageProjModel=module("image_proj").ImageProjModel,
                AudioProjModel=module("audio_proj").AudioProjModel,
                AudioEmotionClassifierModel=module("emotion_classifier").AudioEmotionClassifierModel,
                # the parts tests/test_memo_parts.py compares ours with
                Transformer3DModel=module("transformer_3d").Transformer3DModel,
                MemoryLinearAttnProcessor=module("attention_processor").MemoryLinearAttnProcessor,
                MemoryLinearAttnTemporalModule=module("motion_module").MemoryLinearAttnTemporalModule,
            )
    finally:
        sys.dont_write_bytecode = writes_bytecode


def construct_networks(memo: types.SimpleNamespace) -> tuple[torch.nn.Module, ...]:
    """The networks as inference.py gets them from `from_pretrained` (configs above), in
    NETWORK_NAMES order, on the current default device (meta for shapes only), in eval mode."""
    with quiet():
        nets = (
            memo.UNet2DConditionModel.from_config(copy.deepcopy(MEMO_REFERENCE_NET_CONFIG)),
            memo.UNet3DConditionModel.from_config(copy.deepcopy(MEMO_DIFFUSION_NET_CONFIG)),
            memo.ImageProjModel(),
            memo.AudioProjModel(),
            memo.AudioEmotionClassifierModel(),
        )
    for net in nets:
        net.eval()  # inference.py:156-160 (the classifier: audio_utils.py:194)
    return nets


def _part(state: dict, buffers: set, label: str, marker: str) -> str:
    part = {k: v for k, v in state.items() if marker in k}
    part_buffers = [k for k in part if k in buffers]
    total = sum(v.numel() for v in part.values())
    n_buf = sum(part[k].numel() for k in part_buffers)
    return (f"#   of which {label} keys (containing '{marker}'): {len(part)} tensors, {total:,} values "
            f"({len(part) - len(part_buffers)} parameters with {total - n_buf:,} values, "
            f"{len(part_buffers)} buffers with {n_buf:,} values)")


def main() -> None:
    memo = load_memo()
    with torch.device("meta"):
        nets = construct_networks(memo)

    rows: list[tuple[str, str, str]] = []
    summary: list[str] = []
    for name, net in zip(NETWORK_NAMES, nets):
        net_rows, line, state, buffers = network_rows(name, net)
        rows += net_rows
        total = sum(v.numel() for v in state.values())
        summary.append(f"{line}; x 4 bytes = {total * 4 / 1e9:.4g} GB (hub: {HUB_SIZES[name]})")
        if name == "diffusion_net":
            summary.append(_part(state, buffers, "motion-module", MOTION))
            summary.append(_part(state, buffers, "audio-module", AUDIO))
    rows.sort()

    header = [
        "# MEMO's network state-dict keys: network<TAB>key<TAB>shape (shape empty for a 0-dim tensor), sorted.",
        f"# Built from the module definitions of memoavatar/memo at commit {MEMO_COMMIT}, on the meta",
        "# device, as inference.py builds the networks; NOT read from the released safetensors files.",
        "# Keys are state_dict() keys: parameters and persistent buffers (the motion modules' pos_encoder.pe).",
        f"# Built with torch {torch.__version__.split('+')[0]} and diffusers {diffusers.__version__} (module names"
        " such as attention's to_out.0 come from diffusers).",
        "# Generator: tests/make_memo_keys.py (imports MEMO's code from MEMO_PATH at run time); its docstring",
        "#   gives the source of every config value and the ones that are assumed.",
        "# reference_net: memo.models.unet_2d_condition.UNet2DConditionModel.from_config(<SD 1.5 UNet config>): "
        + json.dumps(MEMO_REFERENCE_NET_CONFIG),
        "# diffusion_net: memo.models.unet_3d.UNet3DConditionModel.from_config(<seen in the released config.json> "
        + json.dumps(MEMO_DIFFUSION_NET_SEEN),
        "#   + <assumed> " + json.dumps(MEMO_DIFFUSION_NET_ASSUMED) + ")",
        "# image_proj: memo.models.image_proj.ImageProjModel() (defaults: its config.json holds no value)",
        "# audio_proj: memo.models.audio_proj.AudioProjModel() (defaults: its config.json holds no value)",
        "# audio_emotion_classifier: memo.models.emotion_classifier.AudioEmotionClassifierModel() (defaults;"
        " misc/audio_emotion_classifier)",
        *summary,
        f"# all: {len(rows)} tensors",
    ]
    write_key_list(OUTPUT, header, rows, summary, ROOT)


if __name__ == "__main__":
    main()
