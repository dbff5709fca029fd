"""V-Express's own code, imported from a checkout at run time, for the key list and the side-by-side checks.

Nothing of V-Express is copied here: its module definitions (tencent-ailab/V-Express at commit 6814f7d) are
imported from the checkout named by VEXPRESS_PATH (or passed in), never written into this repository. Its
networks are built as its inference.py builds them (load_reference_net, load_denoising_unet,
load_v_kps_guider, load_audio_projection: inference.py:77-129, the projection's arguments at :188-201):

* reference_net: modules.UNet2DConditionModel.from_config(<SD1.5 unet/config.json>);
* denoising_unet: modules.UNet3DConditionModel.from_config_2d(<same file>, unet_additional_kwargs=
  <inference_v2.yaml's>) (the file is written to a temporary folder: from_config_2d reads a path);
* v_kps_guider: modules.VKpsGuider(320, block_out_channels=(16, 32, 96, 256));
* audio_projection: modules.AudioProjection(dim=768, depth=4, dim_head=64, heads=12, num_queries=5,
  embedding_dim=768, output_dim=768, ff_mult=4, max_seq_len=10): its --num_pad_audio_frames default 2 gives
  num_queries = 2*2+1 and max_seq_len = 2*(2*2+1); dim and output_dim are the denoising UNet's
  cross_attention_dim (768).

The SD1.5 UNet config is reference_common.SD15_UNET_CONFIG (V-Express's hub repository ships that file as
model_ckpts/stable-diffusion-v1-5/unet/config.json). Its code imports only torch, diffusers, einops and
transformers on these paths; inference_v2.yaml is plain YAML, read with PyYAML (its script uses OmegaConf).

Its packages are named `modules` and `pipelines` at the top level of the checkout: they are imported under
those names with the checkout first on sys.path, after checking that no other package of those names is
loaded, and without writing __pycache__ into the checkout. `draw_kps_image` (datasets/utils.py, which needs
OpenCV) is loaded by file path: datasets/__init__.py imports the training dataset (torchvision), and the
name `datasets` is Hugging Face's too.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_common import SD15_UNET_CONFIG, checkout_path, quiet  # noqa: E402

VEXPRESS_COMMIT = "6814f7db362dc9e26644162034b4d28c5277651a"
REPOSITORY = "tencent-ailab/V-Express"
NUM_PAD_AUDIO_FRAMES = 2  # inference.py's --num_pad_audio_frames default
AUDIO_EMBEDDING_DIM = 768  # inference.py:188-189: inp_dim for --audio_embeddings_type global (its only value)
KPS_GUIDER_CHANNELS = (16, 32, 96, 256)  # inference.py:100


def vexpress_checkout(path=None) -> Path:
    """`path`, else VEXPRESS_PATH, checked to be a V-Express checkout."""
    return checkout_path(path, "VEXPRESS_PATH", "modules/audio_projection.py", REPOSITORY)


def import_vexpress(path: Path) -> types.SimpleNamespace:
    """V-Express's network classes from its `modules` package (and its `pipelines` package, imported lazily by
    `vexpress_pipeline_class`)."""
    for name in ("modules", "pipelines"):
        loaded = sys.modules.get(name)
        if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve().parent != path / name:
            raise RuntimeError(f"another package named '{name}' is imported already ({loaded!r})")
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # leave the checkout as it is
    try:
        with quiet():
            modules = importlib.import_module("modules")
    finally:
        sys.dont_write_bytecode = writes_bytecode
    return types.SimpleNamespace(
        path=path,
        UNet2DConditionModel=modules.UNet2DConditionModel,
        UNet3DConditionModel=modules.UNet3DConditionModel,
        VKpsGuider=modules.VKpsGuider,
        AudioProjection=modules.AudioProjection,
    )


def vexpress_settings(path: Path) -> dict:
    """inference_v2.yaml (plain YAML: its unet_additional_kwargs and noise_scheduler_kwargs)."""
    import yaml

    return yaml.safe_load((path / "inference_v2.yaml").read_text())


def audio_projection_arguments(cross_attention_dim: int = 768,
                               num_pad_audio_frames: int = NUM_PAD_AUDIO_FRAMES) -> dict:
    """The AudioProjection arguments of inference.py's load_audio_projection (:106-129) with the values its
    main passes (:192-201)."""
    return dict(dim=cross_attention_dim, depth=4, dim_head=64, heads=12, num_queries=2 * num_pad_audio_frames + 1,
                embedding_dim=AUDIO_EMBEDDING_DIM, output_dim=cross_attention_dim, ff_mult=4,
                max_seq_len=2 * (2 * num_pad_audio_frames + 1))


def build_audio_projection(vx: types.SimpleNamespace, cross_attention_dim: int = 768):
    """V-Express's AudioProjection as inference.py builds it."""
    with quiet():
        return vx.AudioProjection(**audio_projection_arguments(cross_attention_dim))


def build_vexpress_networks(vx: types.SimpleNamespace, settings: dict, unet_config: dict | None = None) -> dict:
    """The four trained networks, named as their hub files (reference_net, denoising_unet, v_kps_guider,
    audio_projection), built as inference.py builds them (on the current default device: the meta device for
    the key list)."""
    unet_config = dict(SD15_UNET_CONFIG if unet_config is None else unet_config)
    with tempfile.TemporaryDirectory() as folder, quiet():
        config_file = Path(folder) / "config.json"
        config_file.write_text(json.dumps(unet_config))
        reference_net = vx.UNet2DConditionModel.from_config(str(config_file))  # inference.py:78
        denoising_unet = vx.UNet3DConditionModel.from_config_2d(  # inference.py:86-89
            str(config_file), unet_additional_kwargs=settings["unet_additional_kwargs"])
        v_kps_guider = vx.VKpsGuider(320, block_out_channels=KPS_GUIDER_CHANNELS)  # inference.py:100
        audio_projection = vx.AudioProjection(**audio_projection_arguments(denoising_unet.config.cross_attention_dim))
    return {"reference_net": reference_net, "denoising_unet": denoising_unet, "v_kps_guider": v_kps_guider,
            "audio_projection": audio_projection}


def vexpress_pipeline_class(vx: types.SimpleNamespace):
    """pipelines.VExpressPipeline (imports diffusers, transformers, einops and tqdm)."""
    from transformers.utils import logging as transformers_logging

    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # its import of CLIPImageProcessor (unused) warns without torchvision
    try:
        with quiet():
            return importlib.import_module("pipelines").VExpressPipeline
    finally:
        transformers_logging.set_verbosity(level)
        sys.dont_write_bytecode = writes_bytecode


def kps_drawing_module(path: Path) -> types.ModuleType:
    """datasets/utils.py (draw_kps_image; imports OpenCV), loaded by its file path under a private name."""
    spec = importlib.util.spec_from_file_location("vexpress_datasets_utils", path / "datasets" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writes_bytecode
    return module
