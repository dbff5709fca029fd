"""FunASR's own emotion2vec model, imported from a checkout at run time, for the key list and the side-by-side.

Nothing of FunASR is copied here: its `funasr/models/emotion2vec/` files (modelscope/FunASR, model code
unchanged since 2024-05-15 but for ONNX export and docstrings; checked at commit 3c58cb5) are loaded from the
checkout named by FUNASR_PATH (a clone, or just that folder extracted with `git archive`), never written into
this repository.

FunASR's package `__init__` imports most of the toolkit (and torchaudio, modelscope, ...), so the package
is not imported: `funasr`, `funasr.models` and `funasr.models.emotion2vec` are made as empty packages whose
path is the checkout's folder, so that the emotion2vec files import one another as they do in FunASR, and
the two FunASR modules they name but do not use on this path are stand-ins:

* `funasr.register.tables.register(...)`: a decorator that returns the class unchanged (FunASR's registry);
* `funasr.utils.load_utils.load_audio_text_image_video`: used only by `Emotion2vec.inference` (file
  reading), which the side-by-side does not call (it calls `extract_features`, as MEMO does).

`omegaconf` is the one library the files need beyond torch and numpy (model.py builds its config with
`OmegaConf.create`); it is not a dependency of this pack: install it apart, e.g.
`pip install --target /tmp/scratch/funasrlib omegaconf`, and name that folder in FUNASR_LIBS (it is put at
the end of sys.path).

`build_funasr_emotion2vec` builds `Emotion2vec(model_conf=..., vocab_size=9)` as FunASR's AutoModel does
for emotion2vec_plus_large: its config.yaml's model_conf (see `funasr_model_conf`) and the 9 labels of its
tokens.txt as vocab_size (auto_model.py sets vocab_size = len(token_list), which gives the 9-way `proj`).
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_common import checkout_path  # noqa: E402

REPOSITORY = "modelscope/FunASR"
FUNASR_COMMIT = "3c58cb56a56598232c3efffa15d313d7e82a4307"
MODEL_FILE = "funasr/models/emotion2vec/model.py"
FILES = ("fairseq_modules", "timm_modules", "modules", "base", "audio", "model")
# tokens.txt of emotion2vec_plus_large: angry, disgusted, fearful, happy, neutral, other, sad, surprised, unknown
VOCAB_SIZE = 9


def funasr_checkout(path=None) -> Path:
    """`path`, else FUNASR_PATH, checked to hold FunASR's emotion2vec model files."""
    return checkout_path(path, "FUNASR_PATH", MODEL_FILE, REPOSITORY)


def _package(name: str, path: list[str]) -> types.ModuleType:
    import importlib.machinery

    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__path__ = path
    return module


def import_funasr_emotion2vec(path: Path) -> types.ModuleType:
    """FunASR's `funasr.models.emotion2vec.model` module, loaded from the checkout without FunASR's package
    __init__ (see the module docstring)."""
    loaded = sys.modules.get("funasr")
    if loaded is not None and getattr(loaded, "_emo_stand_in", None) != str(path):
        raise RuntimeError(f"another package named 'funasr' is imported already ({loaded!r})")
    libs = os.environ.get("FUNASR_LIBS")
    if libs and libs not in sys.path:
        sys.path.append(libs)
    try:
        importlib.import_module("omegaconf")
    except ImportError:
        raise RuntimeError("FunASR's emotion2vec code needs omegaconf, which this pack does not install: "
                           "pip install --target /tmp/scratch/funasrlib omegaconf, then set "
                           "FUNASR_LIBS=/tmp/scratch/funasrlib.") from None
    if loaded is None:
        root = _package("funasr", [str(path / "funasr")])
        root._emo_stand_in = str(path)
        models = _package("funasr.models", [str(path / "funasr" / "models")])
        emotion2vec = _package("funasr.models.emotion2vec", [str(path / "funasr" / "models" / "emotion2vec")])
        register = types.ModuleType("funasr.register")

        class _Tables:
            @staticmethod
            def register(*_args, **_kwargs):
                return lambda cls: cls

        register.tables = _Tables()
        utils = _package("funasr.utils", [])
        load_utils = types.ModuleType("funasr.utils.load_utils")

        def load_audio_text_image_video(*_args, **_kwargs):
            raise NotImplementedError("stand-in: the side-by-side feeds tensors to extract_features")

        load_utils.load_audio_text_image_video = load_audio_text_image_video
        sys.modules.update({"funasr": root, "funasr.models": models, "funasr.models.emotion2vec": emotion2vec,
                            "funasr.register": register, "funasr.utils": utils,
                            "funasr.utils.load_utils": load_utils})
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__ in the checkout
    try:
        for name in FILES:
            importlib.import_module(f"funasr.models.emotion2vec.{name}")
    finally:
        sys.dont_write_bytecode = dont_write
    return sys.modules["funasr.models.emotion2vec.model"]


def funasr_model_conf(config) -> dict:
    """FunASR's model_conf for our Emotion2vecConfig: the keys its Emotion2vec and AudioEncoder read (the
    rest of config.yaml is training settings they do not read at inference). The dropout rates are those of
    the large config.yaml; they do nothing in eval mode."""
    return {
        "embed_dim": config.embed_dim, "depth": config.depth, "num_heads": config.num_heads,
        "mlp_ratio": config.mlp_ratio, "norm_eps": config.norm_eps, "norm_affine": True,
        "layer_norm_first": False, "end_of_block_targets": False,
        "encoder_dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0, "post_mlp_drop": 0.1,
        "dropout_input": 0.0, "layerdrop": 0.0, "start_drop_path_rate": 0.0, "end_drop_path_rate": 0.0,
        "average_top_k_layers": 16, "loss_beta": 0.0, "loss_scale": None, "clone_batch": 12, "normalize": True,
        "modalities": {"audio": {
            "type": "AUDIO", "feature_encoder_spec": repr(list(config.conv_layers)), "extractor_mode": "layer_norm",
            "conv_pos_width": config.conv_pos_width, "conv_pos_groups": config.conv_pos_groups,
            "conv_pos_depth": config.conv_pos_depth, "conv_pos_pre_ln": False,
            "prenet_depth": config.prenet_depth, "prenet_layerdrop": 0.0, "prenet_dropout": 0.1,
            "start_drop_path_rate": 0.0, "end_drop_path_rate": 0.0,
            "num_extra_tokens": config.num_extra_tokens, "init_extra_token_zero": True,
            "use_alibi_encoder": True, "alibi_scale": 1.0, "learned_alibi": False, "alibi_max_pos": None,
            "learned_alibi_scale": True, "learned_alibi_scale_per_head": True,
            "learned_alibi_scale_per_layer": config.alibi_scale_per_layer,
            "num_alibi_heads": config.num_alibi_heads, "model_depth": config.depth, "local_grad_mult": 1.0,
            "mask_noise_std": 0.01, "mask_prob_min": None, "mask_prob": 0.5, "inverse_mask": False,
            "mask_prob_adjust": 0.05, "keep_masked_pct": 0.0, "mask_length": 5, "add_masks": False,
            "remove_masks": False, "mask_dropout": 0.0, "encoder_zero_mask": True, "mask_channel_prob": 0.0,
            "mask_channel_length": 64, "ema_local_encoder": False,
            "decoder": {
                "decoder_dim": config.decoder_dim, "decoder_groups": config.decoder_groups,
                "decoder_kernel": config.decoder_kernel, "decoder_layers": config.decoder_layers,
                "input_dropout": 0.1, "add_positions_masked": False, "add_positions_all": False,
                "decoder_residual": True, "projection_layers": 1, "projection_ratio": 2.0,
            },
        }},
    }


def build_funasr_emotion2vec(module: types.ModuleType, config, vocab_size: int = VOCAB_SIZE):
    """FunASR's Emotion2vec for `config`, as its AutoModel builds it (model_conf plus vocab_size)."""
    return module.Emotion2vec(model_conf=funasr_model_conf(config), vocab_size=vocab_size)
