"""MEMO family on tiny configs: clips continue through the temporal memory (16 past frames, the portrait for
the first clip), the emotion label reaches the audio modules, one frame per audio frame, rectified-flow
sampling, and MEMO's download folders read strictly."""

import math

import pytest
import torch

from emo_pipeline.components import load_pipeline
from emo_pipeline.io.model_files import find_net
from emo_pipeline.config import memo_config, tiny_memo_config
from emo_pipeline.families import EMOTIONS
from emo_pipeline.io.loading import CheckpointError, MEMO_WEIGHTS, config_for, open_network, write_safetensors
from emo_pipeline.models.backbone import Backbone
from emo_pipeline.models.memory_attention import DECAY
from emo_pipeline.pipeline import EMOPipeline
from emo_pipeline.sampling.schedulers import make_scheduler
from emo_pipeline.sampling.steps import SamplingOptions
from emo_pipeline.tiny import tiny_components, write_tiny_memo_folder


def _pipeline(**overrides) -> EMOPipeline:
    return EMOPipeline(*tiny_components(tiny_memo_config(**overrides)))


def _portrait(pipe):
    return pipe.prepare_portrait(torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(0)),
                                 face_box=(0.25, 0.2, 0.75, 0.8))


def _audio(pipe, seconds: float):
    return pipe.encode_audio(torch.randn(1, round(16000 * seconds), generator=torch.Generator().manual_seed(1)) * 0.1,
                             16000)


@pytest.mark.parametrize("seconds", [0.05, 0.3, 0.5])
def test_one_frame_per_audio_frame_at_30_fps(seconds):
    """Less than one clip (2 frames < 4), and several clips with a short last one."""
    pipe = _pipeline()
    audio = _audio(pipe, seconds)
    expected = math.ceil(seconds * 30 - 1e-9)
    assert audio.num_frames == expected and audio.fps == 30.0
    frames = pipe.generate(_portrait(pipe), audio, SamplingOptions(seed=0, steps=2))
    assert frames.shape == (expected, 64, 64, 3)
    assert torch.isfinite(frames).all() and 0 <= frames.min() and frames.max() <= 1


def test_sixteen_past_frames_feed_the_memory_clip_after_clip(monkeypatch):
    """The first clip's past frames are the portrait 16 times; each later clip adds the 16 frames of the clip
    before (as the ReferenceNet reads them) to the memory faded by 0.9 per frame, and the memory holds it all."""
    pipe = _pipeline(frames_per_clip=16, motion_frames=16)
    portrait, audio = _portrait(pipe), _audio(pipe, 1.6)  # 48 frames: 3 clips
    seen = []  # (ReferenceNet input latents, memory before, memory after) per clip
    reference_net = pipe.net.reference_unet
    latents_in = []
    hook = reference_net.register_forward_hook(lambda m, args, out: latents_in.append(args[0].clone()))
    original = Backbone.prepare_memory

    def recording(self, features, plain, batch, previous):
        memory = original(self, features, plain, batch, previous)
        seen.append((previous, memory, features, plain))
        return memory

    monkeypatch.setattr(Backbone, "prepare_memory", recording)
    try:
        frames = pipe.generate(portrait, audio, SamplingOptions(seed=0, steps=2))
    finally:
        hook.remove()
    assert frames.shape[0] == 48 and len(seen) == 3 and len(latents_in) == 3
    ref_latent = pipe.encode_images(portrait.pixels[None])
    # clip 0: [portrait, portrait × 16] for each guidance row, a fresh memory
    assert latents_in[0].shape[0] == 2 * 17
    assert torch.allclose(latents_in[0], ref_latent.expand(34, -1, -1, -1))
    assert seen[0][0] is None
    # clip 1: the past frames are clip 0's 16 frames as decoded (and encoded again)
    past = pipe.encode_images(frames[:16].permute(0, 3, 1, 2) * 2 - 1)
    assert torch.allclose(latents_in[1][1:17], past, atol=1e-5) and torch.allclose(latents_in[1][18:], past, atol=1e-5)
    # the memory of clip 2 = the memory of clip 1 × 0.9^16 + what clip 1's frames alone give
    before, after, features, plain = seen[2][0], seen[2][1], seen[2][2], seen[2][3]
    assert before is seen[1][1]
    alone = original(pipe.net.denoising_unet, features, plain, 2, None)
    for module_before, module_after, module_alone in zip(before, after, alone):
        for b, a, n in zip(module_before, module_after, module_alone):
            assert torch.allclose(a.kv, b.kv * DECAY ** 16 + n.kv, atol=1e-6)
            assert torch.allclose(a.z, b.z * DECAY ** 16 + n.z, atol=1e-6)
    modules = len(pipe.net.denoising_unet.temporal_modules())
    assert len(after) == modules and all(len(m) == 2 for m in after)


def test_emotion_changes_the_output():
    pipe = _pipeline()
    portrait, audio = _portrait(pipe), _audio(pipe, 0.2)
    neutral = pipe.generate(portrait, audio, SamplingOptions(seed=0, steps=2))
    assert torch.equal(neutral, pipe.generate(portrait, audio, SamplingOptions(seed=0, steps=2, emotion="neutral")))
    happy = pipe.generate(portrait, audio, SamplingOptions(seed=0, steps=2, emotion="happy"))
    assert (happy - neutral).abs().max() > 1e-3
    with pytest.raises(ValueError, match="Unknown emotion 'joyful'; choose one of angry"):
        pipe.generate(portrait, audio, SamplingOptions(steps=1, emotion="joyful"))


def test_guided_rows_get_the_no_emotion_label_and_low_vram_gives_the_same_frames():
    """The unconditional row is labelled 9 (no emotion); guided rows run one by one in low-VRAM mode, each
    with its own slice of the memory, and give the same frames."""
    pipe = _pipeline()
    portrait, audio = _portrait(pipe), _audio(pipe, 0.3)
    labels = []
    module = pipe.net.denoising_unet.down_blocks[0].audio_modules[0]
    hook = module.register_forward_hook(lambda m, args, out: labels.append(args[2].tolist()))
    try:
        batched = pipe.generate(portrait, audio, SamplingOptions(seed=0, steps=2, emotion="sad"))
        pipe.low_vram = True
        one_by_one = pipe.generate(portrait, audio, SamplingOptions(seed=0, steps=2, emotion="sad"))
    finally:
        pipe.low_vram = False
        hook.remove()
    sad = EMOTIONS.index("sad")
    assert labels[0] == [len(EMOTIONS), sad] and [sad] in labels and [len(EMOTIONS)] in labels
    assert (batched - one_by_one).abs().max() < 1e-4


@pytest.mark.parametrize("preset", ["quality", "balanced", "fast"])
def test_presets_run(preset):
    """The model's own flow-matching Euler, DPM-Solver++ and UniPC on flow sigmas, and DeepCache (which keeps
    the audio tokens as the skipped blocks leave them)."""
    pipe = _pipeline()
    frames = pipe.generate(_portrait(pipe), _audio(pipe, 0.2), SamplingOptions(seed=0, preset=preset))
    assert frames.shape == (6, 64, 64, 3) and torch.isfinite(frames).all()


@pytest.mark.parametrize("name", ["flow_euler", "dpmpp_2m", "unipc"])
def test_flow_samplers_reach_the_data_with_the_exact_velocity(name):
    """For data that is one point c, x_σ = (1 − σ)c + σε has velocity v = ε − c = (x − c)/σ: every sampler
    must end on c from any noise."""
    scheduler = make_scheduler(name, memo_config().scheduler)
    scheduler.set_timesteps(8)
    c = torch.tensor([0.7, -1.3, 2.0]).view(1, 3, 1, 1, 1)  # latent-shaped: [batch, channels, frames, h, w]
    x = torch.randn(1, 3, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    for i, t in enumerate(scheduler.timesteps):
        sigma = float(scheduler.sigmas[i])  # the solvers round t to whole steps; σ is what they integrate
        assert abs(sigma - float(t) / 1000) < 2e-3  # and the network, given t, sees the same noise level
        x = scheduler.step((x - c) / sigma, t, x).prev_sample
    assert torch.allclose(x, c.expand_as(x), atol=1e-3), (name, x)


def test_ddpm_samplers_are_refused_for_a_flow_model_and_back():
    with pytest.raises(ValueError, match="rectified-flow model.*flow_euler"):
        _pipeline().generate(None, None, SamplingOptions(scheduler="ddim"))
    with pytest.raises(ValueError, match="DDPM model"):
        from emo_pipeline.config import tiny_config
        from emo_pipeline.sampling.presets import resolve_options
        resolve_options(SamplingOptions(scheduler="flow_euler"), tiny_config())


def test_memo_folders_load_strictly_and_render_as_in_memory(tmp_path):
    config = tiny_memo_config()
    folder = write_tiny_memo_folder(tmp_path, config)
    weights = folder / "diffusion_net" / MEMO_WEIGHTS
    assert find_net(folder) == folder and find_net(weights) == folder and find_net(weights.parent) == folder
    loaded = load_pipeline(weights, config=config)
    reference = EMOPipeline(*tiny_components(config))
    portrait, audio = _portrait(reference), _audio(reference, 0.2)
    options = SamplingOptions(seed=0, steps=2)
    assert torch.equal(loaded.generate(portrait, audio, options), reference.generate(portrait, audio, options))
    # the full-size config is what the folder's keys are checked against without one
    with open_network(folder) as reader, pytest.raises(CheckpointError, match="does not fit the 'memo' model"):
        config_for(reader)


@pytest.mark.parametrize("inflated,joint", [(False, True), (True, False), (None, True)])
def test_resnet_norms_follow_diffusion_net_config(tmp_path, inflated, joint, monkeypatch):
    """use_inflated_groupnorm false (or absent: the class default) → norms over all frames; true → per frame."""
    folder = write_tiny_memo_folder(tmp_path, use_inflated_groupnorm=inflated)
    import emo_pipeline.io.loading as loading

    monkeypatch.setattr(loading, "memo_config", lambda resnet_joint_frames: tiny_memo_config(
        resnet_joint_frames=resnet_joint_frames))
    with open_network(folder) as reader:
        assert config_for(reader).resnet_joint_frames is joint


def test_joint_frame_norm_differs_from_per_frame_norm():
    portrait_frames = {}
    for joint in (True, False):
        pipe = _pipeline(resnet_joint_frames=joint)
        portrait_frames[joint] = pipe.generate(_portrait(pipe), _audio(pipe, 0.2), SamplingOptions(seed=0, steps=2))
    assert (portrait_frames[True] - portrait_frames[False]).abs().max() > 1e-3


def test_memo_download_problems_name_the_file(tmp_path):
    folder = write_tiny_memo_folder(tmp_path)
    config = tiny_memo_config()
    extra = folder / "image_proj" / MEMO_WEIGHTS
    with open_network(folder) as reader:
        state = {k.removeprefix("imageproj."): reader.tensor(k).clone() for k in reader.keys() if k.startswith("imageproj.")}
    state["stray.weight"] = torch.zeros(2)
    write_safetensors(extra, {k: (v.shape, v.dtype) for k, v in state.items()}, state.__getitem__, {})
    with pytest.raises(CheckpointError, match=r"image_proj/diffusion_pytorch_model.safetensors: 1 key\(s\) that do not "
                                              r"belong, e.g. stray.weight"):
        load_pipeline(folder, config=config)
    (folder / "audio_proj" / MEMO_WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks audio_proj/diffusion_pytorch_model.safetensors: MEMO's network"):
        load_pipeline(folder, config=config)
    other = write_tiny_memo_folder(tmp_path / "other")
    (other / "diffusion_net" / "config.json").write_text("{not json")
    with open_network(other) as reader, pytest.raises(CheckpointError, match="config.json is not readable JSON"):
        config_for(reader)
    (other / "diffusion_net" / "config.json").unlink()
    with open_network(other) as reader, pytest.raises(CheckpointError, match="comes with its config.json"):
        config_for(reader)


def test_convert_and_inspect_a_memo_download(tmp_path, monkeypatch):
    """convert: the four folders → one safetensors file that carries the config (with the norm span read from
    diffusion_net/config.json) and gives the same frames; inspect names the family."""
    from emo_pipeline.cli import main
    from emo_pipeline.io.loading import convert_checkpoint, describe_checkpoint

    config = tiny_memo_config(resnet_joint_frames=False)
    folder = write_tiny_memo_folder(tmp_path, config, use_inflated_groupnorm=True)
    target = convert_checkpoint(folder, tmp_path / "memo.safetensors", config=config)
    with open_network(target) as reader:
        assert config_for(reader) == config
    options = SamplingOptions(seed=0, steps=2)
    ours = load_pipeline(target)
    reference = EMOPipeline(*tiny_components(config))
    portrait, audio = _portrait(reference), _audio(reference, 0.2)
    assert torch.equal(ours.generate(portrait, audio, options), reference.generate(portrait, audio, options))
    text = describe_checkpoint(folder)
    assert "reference_net/diffusion_pytorch_model.safetensors" in text and "safetensors" in text
    assert "does not fit the 'memo' model" in text  # tiny weights, checked against the full-size MEMO
    assert main(["inspect", str(folder / "diffusion_net")]) == 0
    import emo_pipeline.io.loading as loading

    monkeypatch.setattr(loading, "memo_config", lambda resnet_joint_frames: tiny_memo_config(
        name="memo", resnet_joint_frames=resnet_joint_frames))
    text = describe_checkpoint(folder)
    assert "family: MEMO (its four folders; resnet norms over each frame)" in text and "keys: all keys match" in text


def test_fp8_weights_and_precision_defaults():
    from emo_pipeline.components import default_dtype
    from emo_pipeline.config import hallo_config

    assert default_dtype(memo_config(), "cuda") == torch.bfloat16
    assert default_dtype(hallo_config(), "cuda") == torch.float16
    assert default_dtype(memo_config(), "cpu") == torch.float32
    pipe = _pipeline()
    portrait, audio = _portrait(pipe), _audio(pipe, 0.2)
    exact = pipe.generate(portrait, audio, SamplingOptions(seed=0, steps=2))
    pipe.store_weights_fp8()
    stored = pipe.generate(portrait, audio, SamplingOptions(seed=0, steps=2))
    assert stored.shape == exact.shape and 0 < (stored - exact).abs().mean() < 0.05


def test_cli_emotion_flag(capsys):
    from emo_pipeline.cli.parser import build_parser as _parser, generate_defaults

    assert _parser().parse_args(["generate", "--emotion", "happy"]).emotion == "happy"
    assert _parser().parse_args(["generate", "--emotion", "happy,sad"]).emotion == ["happy", "sad"]
    assert generate_defaults()["emotion"] is None  # a batch job may set it; unset means auto (neutral without the detector)
    with pytest.raises(SystemExit):
        _parser().parse_args(["generate", "--emotion", "joyful"])
    assert "Unknown emotion 'joyful'" in capsys.readouterr().err
