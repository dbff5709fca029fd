"""The VAE and wav2vec2 in every accepted form, written by the tests and loaded back."""

import pytest
import torch
from safetensors.torch import save_file

from conftest import speech_like
from emo_pipeline.audio.encoder import AudioEncoder
from emo_pipeline.components import load_pipeline
from emo_pipeline.io.loading import CheckpointError
from emo_pipeline.tiny import tiny_vae, tiny_wav2vec, write_tiny_model_folder
from emo_pipeline.vae import load_vae

TINY_VAE_CONFIG = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 4,
    "act_fn": "silu", "sample_size": 64, "scaling_factor": 0.18215, "block_out_channels": [8, 16, 16, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
}


def to_ldm(state: dict[str, torch.Tensor], levels: int = 4) -> dict[str, torch.Tensor]:
    """diffusers → original (LDM) VAE names, written independently of diffusers' converter."""
    out = {}
    for key, value in state.items():
        k = key
        for part in ("encoder", "decoder"):
            k = k.replace(f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.")
            k = k.replace(f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.")
            k = k.replace(f"{part}.mid_block.attentions.0.group_norm.", f"{part}.mid.attn_1.norm.")
            for a, b in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
                if f"{part}.mid_block.attentions.0.{a}." in k:
                    k = k.replace(f"{part}.mid_block.attentions.0.{a}.", f"{part}.mid.attn_1.{b}.")
                    if k.endswith("weight"):
                        value = value[:, :, None, None]  # LDM keeps them as 1×1 convs
            k = k.replace(f"{part}.conv_norm_out.", f"{part}.norm_out.")
        k = k.replace("conv_shortcut.", "nin_shortcut.")
        for i in range(levels):
            k = k.replace(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.")
            k = k.replace(f"encoder.down_blocks.{i}.downsamplers.0.conv.", f"encoder.down.{i}.downsample.conv.")
            k = k.replace(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{levels - 1 - i}.block.")
            k = k.replace(f"decoder.up_blocks.{i}.upsamplers.0.conv.", f"decoder.up.{levels - 1 - i}.upsample.conv.")
        out["first_stage_model." + k] = value.contiguous()
    return out


@pytest.mark.parametrize("layout", ["diffusers-file", "ldm-file", "folder"])
def test_vae_in_each_form_decodes_identically(tmp_path, layout):
    vae = tiny_vae(seed=2).eval()
    if layout == "folder":
        vae.save_pretrained(tmp_path / "vae")
        path = tmp_path / "vae"
    else:
        state = {k: v.contiguous() for k, v in vae.state_dict().items()}
        path = tmp_path / "vae.safetensors"
        save_file(to_ldm(state) if layout == "ldm-file" else state, str(path))
    loaded = load_vae(path, config=TINY_VAE_CONFIG).eval()
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.decode(z).sample, vae.decode(z).sample)


def test_wrong_vae_file_is_reported(tmp_path):
    save_file({"decoder.conv_in.weight": torch.zeros(3, 3)}, str(tmp_path / "v.safetensors"))
    with pytest.raises(CheckpointError, match="not an SD1.5-family VAE"):
        load_vae(tmp_path / "v.safetensors", config=TINY_VAE_CONFIG)


def test_wav2vec_folder_and_single_file_agree(tmp_path):
    model = tiny_wav2vec(seed=3).eval()
    model.save_pretrained(tmp_path / "wav2vec")
    state = {"wav2vec2." + k: v.contiguous() for k, v in model.state_dict().items()}  # as Wav2Vec2ForCTC names it
    state["lm_head.weight"] = torch.zeros(32, 32)
    save_file(state, str(tmp_path / "w2v.safetensors"))
    model.config.to_json_file(tmp_path / "w2v.json")
    speech = speech_like(0.5)[0]
    a = AudioEncoder.from_pretrained(tmp_path / "wav2vec")(speech, 12)
    b = AudioEncoder.from_pretrained(tmp_path / "w2v.safetensors")(speech, 12)
    assert a.shape == (12, 2, 32) and torch.equal(a, b)
    (tmp_path / "w2v.json").unlink()  # 32 wide: no standard head count to read from the shapes
    with pytest.raises(CheckpointError, match="w2v.json"):
        AudioEncoder.from_pretrained(tmp_path / "w2v.safetensors")


@pytest.mark.parametrize("prefix,dtype", [("wav2vec2.", torch.float16), ("", torch.float32)], ids=["ctc-fp16", "plain-fp32"])
def test_wav2vec_file_in_comfyui_audio_encoders_layout(tmp_path, prefix, dtype):
    """ComfyUI's models/audio_encoders files: transformers key names (optionally under `wav2vec2.`,
    the positional conv in the old weight_g/weight_v names), no config beside them; the config is
    read from the shapes (768 wide: base's 12 heads; here 2 layers to stay small)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from emo_pipeline.audio.encoder import wav2vec2_config_from_shapes

    torch.manual_seed(4)
    model = Wav2Vec2Model(Wav2Vec2Config(num_hidden_layers=2)).eval()
    state = {k: v.to(dtype).float() for k, v in model.state_dict().items()}  # the file's precision
    model.load_state_dict(state)
    model.save_pretrained(tmp_path / "wav2vec")
    old_names = {k.replace("parametrizations.weight.original0", "weight_g")
                  .replace("parametrizations.weight.original1", "weight_v"): v for k, v in state.items()}
    save_file({prefix + k: v.to(dtype).contiguous() for k, v in old_names.items()}, str(tmp_path / "w2v.safetensors"))
    speech = speech_like(0.5)[0]
    a = AudioEncoder.from_pretrained(tmp_path / "wav2vec")(speech, 12)
    b = AudioEncoder.from_pretrained(tmp_path / "w2v.safetensors")(speech, 12)
    assert a.shape == (12, 2, 768) and torch.equal(a, b)
    config = wav2vec2_config_from_shapes({k: v.shape for k, v in model.state_dict().items()})
    assert (config.num_attention_heads, config.feat_extract_norm, config.conv_bias) == (12, "group", False)


def test_model_folder_with_single_file_parts_and_dtype(tmp_path):
    write_tiny_model_folder(tmp_path)
    vae = load_vae(tmp_path / "vae")
    save_file(to_ldm({k: v.contiguous() for k, v in vae.state_dict().items()}), str(tmp_path / "ldm_vae.safetensors"))
    import shutil

    shutil.rmtree(tmp_path / "vae")
    with pytest.raises(FileNotFoundError, match="No VAE"):
        load_pipeline(tmp_path / "tiny")
    # A VAE chosen explicitly (as from ComfyUI's models/vae) is used instead; the tiny VAE needs its config.
    import emo_pipeline.vae as vae_module

    original = vae_module.SD_VAE_CONFIG
    vae_module.SD_VAE_CONFIG = TINY_VAE_CONFIG
    try:
        pipe = load_pipeline(tmp_path / "tiny", dtype=torch.bfloat16, vae=tmp_path / "ldm_vae.safetensors")
    finally:
        vae_module.SD_VAE_CONFIG = original
    assert pipe.dtype == torch.bfloat16
    assert next(pipe.net.parameters()).dtype == torch.bfloat16 and next(pipe.vae.parameters()).dtype == torch.bfloat16


def test_loading_wav2vec_prints_no_progress_bar(tmp_path, capfd):
    """transformers draws a 'Loading weights' bar for every from_pretrained; a run shows none (and the
    setting is given back afterwards)."""
    from transformers.utils import logging as transformers_logging

    write_tiny_model_folder(tmp_path)
    capfd.readouterr()
    encoder = AudioEncoder.from_pretrained(tmp_path / "wav2vec")
    captured = capfd.readouterr()
    assert encoder is not None and "Loading" not in captured.err + captured.out and "it/s" not in captured.err
    assert transformers_logging.is_progress_bar_enabled()
