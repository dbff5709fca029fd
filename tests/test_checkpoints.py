"""Network files: strict loading, round trips, clear errors, and safe handling of pickles."""

import pickle

import numpy as np
import pytest
import torch

from conftest import speech_like
from emo_pipeline.config import tiny_config
from emo_pipeline.io.loading import CheckpointError, describe_checkpoint, load_net, save_net
from emo_pipeline.pipeline import EMOPipeline
from emo_pipeline.sampling.steps import SamplingOptions
from emo_pipeline.tiny import tiny_net


def test_safetensors_round_trip_gives_identical_frames(tiny_pipeline, tiny_portrait, tmp_path):
    path = save_net(tiny_pipeline.net, tmp_path / "net.safetensors")
    loaded = load_net(path)
    assert loaded.config == tiny_pipeline.config
    for (k, a), (k2, b) in zip(tiny_pipeline.net.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    audio = tiny_pipeline.encode_audio(speech_like(0.2), 16000)
    other = EMOPipeline(loaded, tiny_pipeline.vae, tiny_pipeline.audio_encoder)
    opts = SamplingOptions(seed=2, steps=2)
    assert torch.equal(tiny_pipeline.generate(tiny_portrait, audio, opts), other.generate(tiny_portrait, audio, opts))


def test_pickled_state_dict_loads_with_the_config_given(tmp_path):
    net = tiny_net(seed=4)
    path = tmp_path / "net.pth"
    torch.save(net.state_dict(), path)
    loaded = load_net(path, config=tiny_config())
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))


def test_missing_and_unexpected_keys_are_listed_with_counts(tmp_path):
    state = tiny_net().state_dict()
    removed = [k for k in state if k.startswith("audioproj.")]
    for k in removed:
        del state[k]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_net(path, config=tiny_config())
    text = str(err.value)
    assert f"{len(removed)} missing key(s): audioproj." in text
    assert "1 unexpected key(s): extra.weight" in text


def test_wrong_shapes_are_reported(tmp_path):
    state = tiny_net().state_dict()
    state["imageproj.proj.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "net.pth")
    with pytest.raises(CheckpointError, match=r"imageproj.proj.weight \(3, 3\)"):
        load_net(tmp_path / "net.pth", config=tiny_config())


def test_unknown_file_without_config_is_refused_with_explanation(tmp_path):
    torch.save(tiny_net().state_dict(), tmp_path / "net.pth")
    with pytest.raises(CheckpointError, match="not a Hallo/Hallo2 net.pth"):
        load_net(tmp_path / "net.pth")


class Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > pwned.txt",))


def test_pickle_with_code_is_refused_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"w": Exploit()}, f)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_net(path, config=tiny_config())
    assert not (tmp_path / "pwned.txt").exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_files_give_a_clear_error(tmp_path, suffix):
    net = tiny_net()
    full = tmp_path / f"full{suffix}"
    if suffix == ".safetensors":
        save_net(net, full)
    else:
        torch.save(net.state_dict(), full)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="damaged or incomplete"):
        load_net(cut, config=tiny_config())


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="Checkpoint not found"):
        load_net("/nonexistent/net.pth")


def test_inspect_describes_family_and_keys(tmp_path):
    path = save_net(tiny_net(), tmp_path / "net.safetensors")
    text = describe_checkpoint(path)
    assert "EMO safetensors" in text and "config 'tiny'" in text and "all keys match" in text


def test_converted_pth_gives_bit_identical_frames(tiny_pipeline, tiny_portrait, tmp_path):
    from emo_pipeline.cli import main

    torch.save(tiny_pipeline.net.state_dict(), tmp_path / "net.pth")
    out = tmp_path / "net.safetensors"
    assert main(["convert", str(tmp_path / "net.pth"), str(out), "--preset", "tiny"]) == 0
    converted = load_net(out)  # no config given: it travels in the file
    audio = tiny_pipeline.encode_audio(speech_like(0.2), 16000)
    opts = SamplingOptions(seed=9, steps=2)
    other = EMOPipeline(converted, tiny_pipeline.vae, tiny_pipeline.audio_encoder)
    assert torch.equal(tiny_pipeline.generate(tiny_portrait, audio, opts), other.generate(tiny_portrait, audio, opts))


def test_convert_to_fp16_and_load_into_any_dtype(tmp_path):
    from emo_pipeline.io.loading import CheckpointReader, convert_checkpoint

    net = tiny_net(seed=1)
    torch.save(net.state_dict(), tmp_path / "net.pth")
    path = convert_checkpoint(tmp_path / "net.pth", tmp_path / "half.safetensors", torch.float16, tiny_config())
    with CheckpointReader(path) as reader:
        assert set(reader.dtypes.values()) == {torch.float16}
        assert reader.shapes == {k: v.shape for k, v in net.state_dict().items()}
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        loaded = load_net(path, dtype=dtype)
        weight = loaded.audioproj.proj1.weight
        assert weight.dtype == dtype and not weight.requires_grad
        torch.testing.assert_close(weight.float(), net.audioproj.proj1.weight.half().float(), atol=1e-2, rtol=0)
    assert not list(tmp_path.glob("*.partial"))


def test_reader_gives_names_and_shapes_without_reading_data(tmp_path):
    from emo_pipeline.io.loading import CheckpointReader

    path = save_net(tiny_net(), tmp_path / "n.safetensors")
    with CheckpointReader(path) as reader:
        assert len(reader.keys()) == len(tiny_net().state_dict())
        assert reader.metadata["format"] == "emo-net"
        # the safetensors format: an 8-byte little-endian header length, then JSON
        import json
        import struct

        raw = path.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8: 8 + n])
        key = "imageproj.proj.weight"
        assert list(reader.shapes[key]) == header[key]["shape"]
        start, end = header[key]["data_offsets"]
        expected = torch.frombuffer(bytearray(raw[8 + n + start: 8 + n + end]), dtype=torch.float32)
        assert torch.equal(reader.tensor(key).flatten(), expected)


def test_unknown_layout_says_what_it_resembles():
    from pathlib import Path
    from types import SimpleNamespace

    from emo_pipeline.config import hallo_config
    from emo_pipeline.io.loading import config_for, expected_shapes

    shapes = expected_shapes(hallo_config())
    lone_unet = {k.removeprefix("denoising_unet."): v for k, v in shapes.items() if k.startswith("denoising_unet.")}
    with pytest.raises(CheckpointError, match=r"looks most like Hallo/Hallo2 net.pth \(denoising_unet only\): 1946 of"):
        config_for(SimpleNamespace(path=Path("denoising_unet.pth"), metadata={}, shapes=lone_unet))
    with pytest.raises(CheckpointError, match="match no EMO-family layout"):
        config_for(SimpleNamespace(path=Path("x.pth"), metadata={}, shapes={"w": torch.Size([1])}))


def test_pickle_reader_remaps_while_loading_and_values_survive(tmp_path, monkeypatch):
    import emo_pipeline.io.loading as loading

    net = tiny_net(seed=6)
    torch.save(net.state_dict(), tmp_path / "net.pth")
    opened = []
    original = loading.CheckpointReader._open_pickle
    monkeypatch.setattr(loading.CheckpointReader, "_open_pickle", lambda self: opened.append(1) or original(self))
    monkeypatch.setattr(loading, "REMAP_BYTES", 1 << 20)  # remap every MiB read
    loaded = load_net(tmp_path / "net.pth", config=tiny_config(), dtype=torch.float16)
    assert len(opened) > 3
    for a, b in zip(net.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a.half(), b)


def test_pickle_carrying_code_is_refused_and_said_so(tmp_path):
    import collections

    torch.save({"weight": torch.zeros(2), "extra": collections.OrderedDict(a=object)}, tmp_path / "net.pth")
    with pytest.raises(CheckpointError, match="carries code or Python objects besides tensors"):
        load_net(tmp_path / "net.pth", config=tiny_config())


@pytest.mark.parametrize("part", ["wav2vec", "vae"])
def test_model_folder_whose_pickle_carries_code_is_refused_plainly(tmp_path, part):
    import collections

    from emo_pipeline.audio.encoder import AudioEncoder
    from emo_pipeline.tiny import tiny_vae, tiny_wav2vec
    from emo_pipeline.vae import load_vae

    folder = tmp_path / part
    model = tiny_wav2vec() if part == "wav2vec" else tiny_vae()
    model.save_pretrained(folder)
    for file in folder.glob("*.safetensors"):  # the weights as a pickle instead, one carrying an object
        file.unlink()
    weights = folder / ("pytorch_model.bin" if part == "wav2vec" else "diffusion_pytorch_model.bin")
    torch.save({"weight": torch.zeros(2), "extra": collections.OrderedDict(a=object)}, weights)
    load = AudioEncoder.from_pretrained if part == "wav2vec" else load_vae
    with pytest.raises(CheckpointError, match="carries code or Python objects"):
        load(folder)


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes_in_a_pickle_are_called_damaged_not_code(tmp_path, seed):
    """weights_only refuses random bytes in the words it uses for a pickle carrying code: only a pickle that parses
    to its end is reported as carrying code."""
    path = tmp_path / "net.pth"
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match="is damaged") as err:
        load_net(path, config=tiny_config())
    assert "carries code" not in str(err.value)
