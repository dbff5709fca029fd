"""Reading and writing EMO network checkpoints, with strict key checks and readable errors.

Accepted networks: Hallo/Hallo2 `net.pth` as downloaded (a pickled state dict, read with
`weights_only=True` so no code inside it can run), EchoMimic's four files as downloaded
(`denoising_unet.pth`, `reference_unet.pth`, `motion_module.pth`, `face_locator.pth`, or the
`_acc` variants of the first and third), MEMO's four diffusers-style folders as downloaded
(`reference_net/`, `diffusion_net/`, `image_proj/`, `audio_proj/`, each a
`diffusion_pytorch_model.safetensors` beside its `config.json`), and our `.safetensors` form, which
carries its EMOConfig as JSON in the file's metadata. `open_network` reads any of them as one set of keys.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..config import (EMOConfig, echomimic_acc_config, echomimic_config, echomimic_v2_acc_config, echomimic_v2_config,
                      hallo2_config, hallo_config, joyhallo_config, memo_config, vexpress_config)
from ..models import EMONet
from .disk import check_free_space, disk_full_error, is_disk_full
from .errors import NamedPlainly
from .pickle_scan import pickle_is_whole
from .safe_files import write_atomic

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
# the precisions a network is loaded or written in, by the names options and the family record use
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CONFIG_METADATA_KEY = "emo_config"


class CheckpointError(NamedPlainly, ValueError):
    """A checkpoint file that cannot be used, with what is wrong and what to do."""


@dataclass
class KeyReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def describe(self, first: int = 5) -> str:
        parts = []
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                shown = ", ".join(items[:first]) + (", ..." if len(items) > first else "")
                parts.append(f"{len(items)} {label} key(s): {shown}")
        if self.wrong_shape:
            shown = ", ".join(f"{k} {tuple(got)} (expected {tuple(exp)})" for k, got, exp in self.wrong_shape[:first])
            parts.append(f"{len(self.wrong_shape)} tensor(s) of the wrong shape: {shown}")
        return "; ".join(parts) if parts else "all keys match"


class ConfigFileError(CheckpointError):
    """A model's config.json that is missing, unreadable or not a JSON object: the download is damaged."""


def read_json_object(path: Path, what: str) -> dict:
    """The JSON object in a model's config file; a missing file, broken JSON or another JSON type (a list, a
    number) is a ConfigFileError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigFileError(f"{path} is missing: {what} comes with its {path.name}; download the folder again.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigFileError(f"{path} is not readable JSON ({err}); download it again.") from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path} holds a JSON {type(data).__name__}, not the object of settings {what} needs; "
                              "download it again.")
    return data


def text_file_head(path: Path) -> str | None:
    """The first line of `path` when it is a text file (no NUL byte, UTF-8), else None. Weights files are
    binary: a pickle starts with its protocol byte 0x80, a zip-format torch file with PK, safetensors with
    an 8-byte length."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head or b"\0" in head or head.startswith((b"\x80", b"PK")):
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not merely a character cut at the 512th byte
            return None
        text = head[: err.start].decode("utf-8")
    return text.strip().splitlines()[0][:80] if text.strip() else None


def unreadable_weights_error(path: Path, err: Exception, expected: str = "") -> CheckpointError:
    """Why a weights file could not be opened, said as it is: a text file (a Git LFS pointer, notes), a
    pickle carrying code (refused by weights_only), or a damaged file."""
    kind = "safetensors" if path.suffix == ".safetensors" else "PyTorch pickle"
    expected = f" Expected {expected}." if expected else ""
    line = text_file_head(path)
    if line is not None and line.startswith("version https://git-lfs"):
        return CheckpointError(f"{path} is a Git LFS pointer, not the weights: the download fetched the pointer "
                               f"only. Download the file itself (git lfs pull, or from the model page).{expected}")
    if line is not None:
        return CheckpointError(f"{path} is a text file (it begins \"{line}\"), not a {kind} weights file: give "
                               f"the model file itself.{expected}")
    chain, cause = [], err
    while cause is not None and len(chain) < 8:
        chain.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    refused = any("weights_only" in t or "Unsupported global" in t for t in chain)
    if kind != "safetensors" and refused and pickle_is_whole(path):
        return CheckpointError(
            f"Refused {path}: it is a pickle that carries code or Python objects besides tensors, and pickled "
            "files are opened with weights_only=True so that no code inside them can run. Use the file from the "
            f"model's official download, or a .safetensors version of it.{expected}")
    if refused:  # random or garbled bytes: weights_only stumbles on them in the same words
        return CheckpointError(f"{path} is damaged: its pickle does not parse (cut short or garbled bytes), so it "
                               f"holds no usable weights. Download it again.{expected}")
    text = str(err)
    return CheckpointError(
        f"{path} is damaged or incomplete: it cannot be read as a {kind} file ({type(err).__name__}: "
        f"{text.splitlines()[0][:200] if text else ''}). Download it again.{expected}")


def folder_model_error(path: Path, what: str, err: Exception) -> CheckpointError:
    """A transformers/diffusers folder that its library could not load, said plainly (a pickle that
    carries code is refused by their weights_only loading; anything else is a damaged download)."""
    text, chain = str(err), []
    cause = err
    while cause is not None and len(chain) < 8:  # the libraries wrap the loader's own error
        chain.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    if any("weights_only" in t or "Unsupported global" in t for t in chain):
        reason = ("its weights are a pickle that carries code or Python objects besides tensors, which is refused "
                  "(weights_only loading): use the official files, or a .safetensors version of the weights")
    else:
        reason = f"{type(err).__name__}: {text.splitlines()[0][:200] if text else ''}. Download the folder again"
    return CheckpointError(f"Cannot load the {what} in {path}: {reason}.")


def compare_keys(expected: dict[str, torch.Size], found: dict[str, torch.Size]) -> KeyReport:
    return KeyReport(
        missing=sorted(set(expected) - set(found)),
        unexpected=sorted(set(found) - set(expected)),
        wrong_shape=[(k, found[k], expected[k]) for k in sorted(set(expected) & set(found))
                     if tuple(found[k]) != tuple(expected[k])],
    )


def expected_shapes(config: EMOConfig) -> dict[str, torch.Size]:
    """The state-dict layout of a config, built on the meta device (no memory, no time)."""
    with torch.device("meta"):
        net = EMONet(config)
    return {k: v.shape for k, v in net.state_dict().items()}


SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


REMAP_BYTES = 512 << 20


class CheckpointReader:
    """A network file's names, shapes and metadata without its data; tensors are read one at a time.

    safetensors files are read with plain file reads (no memory map), so loading holds at most
    one source tensor besides the model being filled. Pickles are opened with weights_only=True
    (no code inside them can run) and memory-mapped.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"Checkpoint not found: {self.path}")
        self._file = None
        self._state: dict[str, torch.Tensor] | None = None
        try:
            if self.path.suffix == ".safetensors":
                self._open_safetensors()
            elif self.path.suffix in PICKLE_SUFFIXES:
                self._open_pickle()
            else:
                raise CheckpointError(f"{self.path.name}: unknown checkpoint type; use .safetensors or .pth.")
        except CheckpointError:
            self.close()
            raise
        except Exception as err:  # truncated, corrupt or unsafe files all end here
            self.close()
            raise self._damaged(err) from None

    def _damaged(self, err: Exception) -> CheckpointError:
        return unreadable_weights_error(self.path, err)

    def _open_safetensors(self) -> None:
        self._file = open(self.path, "rb")
        size = self.path.stat().st_size
        (header_len,) = struct.unpack("<Q", self._file.read(8))
        if header_len > size - 8:
            raise ValueError("header longer than the file")
        header = json.loads(self._file.read(header_len))
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._entries = {}
        base = 8 + header_len
        for key, entry in header.items():
            begin, end = entry["data_offsets"]
            if base + end > size:
                raise ValueError(f"tensor {key} runs past the end of the file")
            self._entries[key] = (SAFETENSORS_DTYPES[entry["dtype"]], torch.Size(entry["shape"]), base + begin, end - begin)
        self.shapes = {k: e[1] for k, e in self._entries.items()}
        self.dtypes = {k: e[0] for k, e in self._entries.items()}

    def _open_pickle(self) -> None:
        self._mmap = True
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            self._mmap = False  # legacy (non-zip) format: read whole
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{self.path.name} is not a state dict of tensors.")
        self._state, self.metadata, self._mapped = state, {}, 0
        self.shapes = {k: v.shape for k, v in state.items()}
        self.dtypes = {k: v.dtype for k, v in state.items()}

    def keys(self) -> list[str]:
        return list(self.shapes)

    def tensor(self, key: str) -> torch.Tensor:
        if self._state is not None:
            if self._mmap and self._mapped > REMAP_BYTES:
                # Pages read through a memory map stay resident while it is mapped; mapping the file
                # afresh lets the pages of tensors already converted (and copied) go.
                self._state, self._mapped = None, 0
                self._open_pickle()
            tensor = self._state[key]
            self._mapped += tensor.numel() * tensor.element_size()
            return tensor
        dtype, shape, offset, nbytes = self._entries[key]
        buffer = torch.empty(nbytes, dtype=torch.uint8)
        self._file.seek(offset)
        if self._file.readinto(buffer.numpy()) != nbytes:
            raise self._damaged(EOFError(f"tensor {key} is cut short"))
        return buffer.view(dtype).reshape(shape)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._state = None

    def __enter__(self) -> "CheckpointReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# EchoMimic's files and the part of our network each fills. The denoising UNet comes in two files
# (2-D weights and motion modules; EchoMimic merges them and loads with strict=False, so the split
# is not fixed): both fill `denoising_unet.`, and denoising_unet.pth wins where both hold a key, as
# in EchoMimic's loading order. `{}` is "" or "_acc" (the accelerated weights).
ECHOMIMIC_PARTS = (
    ("reference_unet.", "reference_unet.pth"),
    ("denoising_unet.", "motion_module{}.pth"),
    ("denoising_unet.", "denoising_unet{}.pth"),
    ("face_locator.", "face_locator.pth"),
)
# EchoMimic v2 (BadToBest/EchoMimicV2): the same files, with its pose encoder (the face locator's body,
# 3 channels) in place of the face locator; its presence tells the two apart.
ECHOMIMIC_V2_PARTS = ECHOMIMIC_PARTS[:3] + (("face_locator.", "pose_encoder.pth"),)
ECHOMIMIC_V2_MARK = "pose_encoder.pth"
ECHOMIMIC_ENTRY = "denoising_unet"


def is_echomimic_entry(path: Path) -> bool:
    """A folder or file that stands for EchoMimic's four files (its denoising_unet[_acc].pth)."""
    path = Path(path)
    if path.is_dir():
        return (path / "denoising_unet.pth").is_file() or (path / "denoising_unet_acc.pth").is_file()
    return path.name.startswith(ECHOMIMIC_ENTRY) and path.suffix in PICKLE_SUFFIXES


# V-Express's files (tk93/V-Express, fp16 pickles) and the part of our network each fills. Its inference.py loads
# denoising_unet.bin, then motion_module.bin over it (both strict=False): the motion modules come from the second.
VEXPRESS_PARTS = (
    ("reference_unet.", "reference_net.bin"),
    ("denoising_unet.", "denoising_unet.bin"),
    ("denoising_unet.", "motion_module.bin"),
    ("face_locator.", "v_kps_guider.bin"),
    ("audioproj.", "audio_projection.bin"),
)
VEXPRESS_MARK = "v_kps_guider.bin"
# reference_net.bin's output layer: V-Express computes it and throws it away; our ReferenceNet has none
VEXPRESS_UNUSED = ("reference_unet.conv_out.", "reference_unet.conv_norm_out.")


def vexpress_folder(path: Path) -> Path | None:
    """The V-Express download that `path` names (the folder holding its five .bin files, or one of them), else
    None. Its keypoint guider's file tells it from EchoMimic's, whose files are also named denoising_unet.*"""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if (folder / VEXPRESS_MARK).is_file() and (path.is_dir() or path.name in {n for _, n in VEXPRESS_PARTS}):
        return folder
    return None


# MEMO's folders (memoavatar/memo on Hugging Face) and the part of our network each fills.
MEMO_PARTS = (
    ("reference_unet.", "reference_net"),
    ("denoising_unet.", "diffusion_net"),
    ("imageproj.", "image_proj"),
    ("audioproj.", "audio_proj"),
)
MEMO_WEIGHTS = "diffusion_pytorch_model.safetensors"


def memo_folder(path: Path) -> Path | None:
    """The MEMO download that `path` names (the folder holding diffusion_net/, that diffusion_net/, or its
    weights file), else None."""
    path = Path(path)
    if path.parent.name == "diffusion_net":  # its weights file
        path = path.parent
    if path.name == "diffusion_net":
        path = path.parent
    return path if (path / "diffusion_net").is_dir() and (path / "reference_net").is_dir() else None


def memo_uses_joint_frame_norm(folder: Path) -> bool:
    """diffusion_net/config.json's use_inflated_groupnorm, read as MEMO's from_pretrained reads it (absent:
    its class default, false): false means the resnets normalise over all of a clip's frames together."""
    data = read_json_object(folder / "diffusion_net" / "config.json", "MEMO's diffusion_net folder")
    return not data.get("use_inflated_groupnorm", False)


class MultiFileReader:
    """Several checkpoint files read as one network: each file's keys under its part's prefix.
    The same interface as CheckpointReader (keys, shapes, dtypes, tensor, metadata)."""

    def __init__(self, folder: Path, parts: list[tuple[str, Path]], variant: str = "", family: str = "echomimic",
                 unused: tuple[str, ...] = ()) -> None:
        """`unused`: key prefixes (ours) that the files may hold and nothing reads; they are left out."""
        self.path, self.variant, self.family, self.metadata = Path(folder), variant, family, {}
        self.parts = parts
        missing = [p for _, p in parts if not p.is_file()]
        if missing and family == "vexpress":
            raise FileNotFoundError(
                f"{self.path} lacks {', '.join(p.name for p in missing)}: V-Express's network is five files, "
                "reference_net.bin, denoising_unet.bin, motion_module.bin, v_kps_guider.bin and audio_projection.bin "
                "(as downloaded from tk93/V-Express: python -m emo_pipeline download v-express), all in this folder.")
        if missing and family == "memo":
            raise FileNotFoundError(
                f"{self.path} lacks {', '.join(str(p.relative_to(self.path)) for p in missing)}: MEMO's network is four "
                "folders, reference_net, diffusion_net, image_proj and audio_proj, each with its "
                f"{MEMO_WEIGHTS} and config.json (as downloaded from memoavatar/memo), all in this folder.")
        if missing and family == "echomimic_v2":
            raise FileNotFoundError(
                f"{self.path} lacks {', '.join(p.name for p in missing)}: EchoMimic v2's network is four files, "
                "denoising_unet, reference_unet, motion_module and pose_encoder (.pth, as downloaded from "
                "BadToBest/EchoMimicV2; the _acc variants for the accelerated weights), all in this folder.")
        if missing:
            raise FileNotFoundError(
                f"{self.path} lacks {', '.join(p.name for p in missing)}: EchoMimic's network is four files, "
                "denoising_unet, reference_unet, motion_module and face_locator (.pth, as downloaded from "
                "BadToBest/EchoMimic; the _acc variants for the accelerated weights), all in this folder"
                + ("; EchoMimic v2's has pose_encoder.pth in place of face_locator.pth (BadToBest/EchoMimicV2)."
                   if any(p.name == "face_locator.pth" for p in missing) else "."))
        self._readers: list[CheckpointReader] = []
        self._source: dict[str, tuple[CheckpointReader, str]] = {}
        self.file_of: dict[str, tuple[str, str]] = {}  # our key → (file in the folder, the file's own key)
        try:
            for prefix, path in parts:
                reader = CheckpointReader(path)
                self._readers.append(reader)
                for key in reader.keys():
                    if (prefix + key).startswith(unused):
                        continue
                    self._source[prefix + key] = (reader, key)
                    self.file_of[prefix + key] = (path.relative_to(self.path).as_posix(), key)
        except Exception:
            self.close()
            raise
        self.shapes = {k: r.shapes[name] for k, (r, name) in self._source.items()}
        self.dtypes = {k: r.dtypes[name] for k, (r, name) in self._source.items()}

    def keys(self) -> list[str]:
        return list(self.shapes)

    def tensor(self, key: str) -> torch.Tensor:
        reader, name = self._source[key]
        return reader.tensor(name)

    def describe_files(self, report: "KeyReport", first: int = 3) -> str:
        """Which file each unexpected or wrongly shaped key came from, so users know which to replace."""
        by_file: dict[str, list[str]] = {}
        for key in report.unexpected + [k for k, _, _ in report.wrong_shape]:
            name, own = self.file_of[key]
            by_file.setdefault(name, []).append(own)
        return "; ".join(f"{name}: {len(keys)} key(s) that do not belong, e.g. {', '.join(keys[:first])}"
                         for name, keys in sorted(by_file.items()))

    def close(self) -> None:
        for reader in self._readers:
            reader.close()

    def __enter__(self) -> "MultiFileReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_network(path: str | Path) -> "CheckpointReader | MultiFileReader":
    """One network file, EchoMimic's four (named by their folder or by denoising_unet[_acc].pth), MEMO's four
    folders (named by the folder holding them, by diffusion_net/ or by its weights file), or V-Express's five files
    (named by their folder or one of them)."""
    path = Path(path)
    memo = memo_folder(path)
    if memo is not None:
        parts = [(prefix, memo / folder / MEMO_WEIGHTS) for prefix, folder in MEMO_PARTS]
        return MultiFileReader(memo, parts, family="memo")
    vexpress = vexpress_folder(path)
    if vexpress is not None:
        parts = [(prefix, vexpress / name) for prefix, name in VEXPRESS_PARTS]
        return MultiFileReader(vexpress, parts, family="vexpress", unused=VEXPRESS_UNUSED)
    if is_echomimic_entry(path):
        if path.is_dir():
            folder, variant = path, "" if (path / "denoising_unet.pth").is_file() else "_acc"
        else:
            folder, variant = path.parent, "_acc" if path.stem.endswith("_acc") else ""
        family = "echomimic_v2" if (folder / ECHOMIMIC_V2_MARK).is_file() else "echomimic"
        names = ECHOMIMIC_V2_PARTS if family == "echomimic_v2" else ECHOMIMIC_PARTS
        parts = [(prefix, folder / name.format(variant)) for prefix, name in names]
        return MultiFileReader(folder, parts, variant, family)
    return CheckpointReader(path)


def config_for(reader: "CheckpointReader | MultiFileReader") -> EMOConfig:
    """The config stored in the file, else the family whose keys the file has. Hallo2's net.pth has
    the same keys as Hallo's, so a 'hallo2' in the file's path is what tells them apart; EchoMimic's
    accelerated weights are told apart by their file names (`_acc`)."""
    if isinstance(reader, MultiFileReader) and reader.family == "memo":
        config = memo_config(resnet_joint_frames=memo_uses_joint_frame_norm(reader.path))
        check_fits(reader, config)
        return config
    if isinstance(reader, MultiFileReader) and reader.family == "vexpress":
        config = vexpress_config()
        check_fits(reader, config)
        return config
    if isinstance(reader, MultiFileReader) and reader.family == "echomimic_v2":
        config = echomimic_v2_acc_config() if reader.variant == "_acc" else echomimic_v2_config()
        check_fits(reader, config)
        return config
    if isinstance(reader, MultiFileReader):
        config = echomimic_acc_config() if reader.variant == "_acc" else echomimic_config()
        check_fits(reader, config)
        return config
    if CONFIG_METADATA_KEY in reader.metadata:
        try:
            return EMOConfig.from_json(reader.metadata[CONFIG_METADATA_KEY])
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{reader.path.name} carries an unreadable EMO config: {err}") from None
    config = hallo_config()
    report = compare_keys(expected_shapes(config), reader.shapes)
    if report.ok:
        return hallo2_config() if "hallo2" in str(reader.path).lower() else config
    # JoyHallo's net.pth: Hallo's keys without the audio modules' attn2_1 and attn2_2 (one shared attention)
    joyhallo = joyhallo_config()
    joy_report = compare_keys(expected_shapes(joyhallo), reader.shapes)
    if joy_report.ok:
        return joyhallo
    size = lambda r: len(r.missing) + len(r.unexpected) + len(r.wrong_shape)  # noqa: E731
    closer = "JoyHallo's" if size(joy_report) < size(report) else "Hallo's"
    raise CheckpointError(
        f"{reader.path.name} is not a Hallo/Hallo2 net.pth, a JoyHallo net.pth nor one of our EMO safetensors files: "
        f"against {closer} layout, {min(report, joy_report, key=size).describe()}. " + resemblance(reader.shapes)
    )


def network_config(path: str | Path) -> EMOConfig:
    """The config of the network at `path` (a file, or EchoMimic's or MEMO's folder: see `open_network`), read
    from its metadata or keys; no weight is loaded."""
    with open_network(path) as reader:
        return config_for(reader)


def resemblance(shapes: dict[str, torch.Size]) -> str:
    """Which known layout a file is closest to, to tell users what they have got."""
    from ..config import emo_config

    names = set(shapes)
    best = None
    for label, config in (("Hallo/Hallo2 net.pth", hallo_config()), ("JoyHallo's net.pth", joyhallo_config()),
                          ("the full EMO network", emo_config()),
                          ("EchoMimic's network", echomimic_config()), ("MEMO's network", memo_config())):
        expected = expected_shapes(config)
        for prefix in ("", "denoising_unet.", "reference_unet."):
            # Sub-model files (a lone UNet, as AnimateAnyone-style packs ship) lack the Net prefixes.
            found = len({prefix + k for k in names} & set(expected))
            if best is None or found > best[0]:
                part = f" ({prefix[:-1]} only)" if prefix else ""
                best = (found, f"{label}{part}", len(expected))
    found, label, total = best
    if found == 0:
        return "Its names match no EMO-family layout."
    return f"It looks most like {label}: {found} of its {len(names)} names are in that layout of {total}."


def load_net(path: str | Path, config: EMOConfig | None = None, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32) -> EMONet:
    """Build the network for a checkpoint and fill it strictly, one tensor at a time, each going
    straight to `device` and `dtype` (no full-precision copy of the whole model on the CPU)."""
    with open_network(path) as reader:
        config = config or config_for(reader)
        check_fits(reader, config)
        with torch.device("meta"):
            net = EMONet(config)
        for key in reader.keys():
            tensor = reader.tensor(key)
            target = dtype if tensor.is_floating_point() else tensor.dtype
            _assign(net, key, tensor.to(device=device, dtype=target))
    return net


def _assign(net: torch.nn.Module, key: str, tensor: torch.Tensor) -> None:
    owner, _, name = key.rpartition(".")
    module = net.get_submodule(owner)
    if name in module._parameters:
        module._parameters[name] = torch.nn.Parameter(tensor, requires_grad=False)
    else:
        module._buffers[name] = tensor


TORCH_TO_SAFETENSORS = {v: k for k, v in SAFETENSORS_DTYPES.items()}


def write_safetensors(path: str | Path, shapes: dict[str, tuple[torch.Size, torch.dtype]],
                      tensor: Callable[[str], torch.Tensor], metadata: dict[str, str]) -> Path:
    """Stream tensors into a .safetensors file one at a time; the file appears only when complete."""
    path = Path(path)
    header, offset = {"__metadata__": metadata}, 0
    for key, (shape, dtype) in shapes.items():
        nbytes = shape.numel() * torch.empty(0, dtype=dtype).element_size()
        header[key] = {"dtype": TORCH_TO_SAFETENSORS[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # keep tensor data 8-byte aligned
    needed = 8 + len(encoded) + offset
    check_free_space(path.parent, path.name, needed)  # refused before a byte is written

    def write(f) -> None:
        f.write(struct.pack("<Q", len(encoded)) + encoded)
        for key, (shape, dtype) in shapes.items():
            data = tensor(key).detach().to("cpu", dtype).contiguous()
            if tuple(data.shape) != tuple(shape):
                raise ValueError(f"{key} has shape {tuple(data.shape)}, expected {tuple(shape)}")
            f.write(data.reshape(-1).view(torch.uint8).numpy().tobytes())

    try:
        write_atomic(path, write=write)  # the file appears only when complete, never through a link
    except OSError as err:
        if is_disk_full(err):  # the space went while writing (another program)
            raise disk_full_error(path.parent, path.name, needed) from None
        raise
    return path


def save_net(net: EMONet, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write a single .safetensors file holding the network and its config."""
    state = net.state_dict()
    shapes = {k: (v.shape, dtype if dtype is not None and v.is_floating_point() else v.dtype) for k, v in state.items()}
    return write_safetensors(path, shapes, state.__getitem__, network_metadata(net.config))


def convert_checkpoint(source: str | Path, target: str | Path, dtype: torch.dtype | None = None,
                       config: EMOConfig | None = None) -> Path:
    """net.pth (or any network file) → our single-file safetensors with its config in the metadata.
    Tensors are converted one at a time: memory stays at about one tensor."""
    with open_network(source) as reader:
        config = config or config_for(reader)
        check_fits(reader, config)
        shapes = {k: (reader.shapes[k], dtype if dtype is not None and reader.dtypes[k].is_floating_point
                      else reader.dtypes[k]) for k in reader.keys()}
        return write_safetensors(target, shapes, reader.tensor, network_metadata(config))


def check_fits(reader: "CheckpointReader | MultiFileReader", config: EMOConfig) -> None:
    """Strict: every key of the config's network, nothing else, every shape right."""
    report = compare_keys(expected_shapes(config), reader.shapes)
    if not report.ok:
        detail = f" {reader.describe_files(report)}." if isinstance(reader, MultiFileReader) else ""
        raise CheckpointError(f"{reader.path.name} does not fit the '{config.name}' model: {report.describe()}.{detail}")


def network_metadata(config: EMOConfig) -> dict[str, str]:
    return {CONFIG_METADATA_KEY: config.to_json(), "format": "emo-net"}


def describe_checkpoint(path: str | Path) -> str:
    """What a network file is, what it holds and what it lacks, for `python -m emo_pipeline inspect`."""
    with open_network(path) as reader:
        shapes, dtypes, metadata = reader.shapes, reader.dtypes, reader.metadata
        params = sum(s.numel() for s in shapes.values())
        counts = Counter(str(d).replace("torch.", "") for d in dtypes.values())
        prefixes = Counter(k.split(".", 1)[0] for k in shapes)
        if isinstance(reader, MultiFileReader):
            files = [p for _, p in reader.parts]
            size = sum(p.stat().st_size for p in files) / 2**20
            kind = "safetensors" if reader.family == "memo" else "pickle"
            names = ", ".join(str(p.relative_to(reader.path)) for p in files)
            head = f"files: {names} in {reader.path} ({size:.1f} MiB, {kind})"
        else:
            head = (f"file: {reader.path} ({reader.path.stat().st_size / 2**20:.1f} MiB, "
                    f"{'safetensors' if reader.path.suffix == '.safetensors' else 'pickle'})")
        lines = [
            head,
            f"tensors: {len(shapes)}, parameters: {params / 1e6:.2f} M, dtypes: "
            + ", ".join(f"{k} ×{n}" for k, n in counts.most_common()),
            "parts: " + ", ".join(f"{k} ({n})" for k, n in sorted(prefixes.items())),
        ]
        try:
            config = config_for(reader)
        except ConfigFileError:
            raise  # a damaged download, not an unknown file: inspect fails on it
        except CheckpointError as err:
            lines.append(f"family: unknown — {err}")
            return "\n".join(lines)
    if CONFIG_METADATA_KEY in metadata:
        family = f"EMO safetensors, {config.spec.title} family (config in metadata)"
    elif config.family == "memo":
        family = (f"MEMO (its four folders; resnet norms over "
                  f"{'all frames together' if config.resnet_joint_frames else 'each frame'})")
    elif config.family in ("echomimic", "echomimic_v2"):
        family = f"{config.spec.title}{' accelerated' if config.name.endswith('-acc') else ''} (its four .pth files)"
    elif config.family == "vexpress":
        family = "V-Express (its five .bin files; weights for non-commercial research only)"
    elif config.family == "joyhallo":
        family = "JoyHallo net.pth (one audio attention shared by the full, face and lip branches)"
    else:
        family = f"{'Hallo2' if config.name == 'hallo2' else 'Hallo'} net.pth"
    report = compare_keys(expected_shapes(config), shapes)
    spec = config.spec
    if spec.sampling == "context_windows":
        sampling = (f"  context windows of {config.frames_per_clip} frames (overlap {spec.context_overlap}), "
                    f"{spec.audio_encoder} audio in the cross-attention, {config.steps} steps, guidance "
                    f"{config.guidance_scale:g}, size {config.sample_size}px, {config.fps:g} fps")
    else:
        sampling = (f"  clip {config.frames_per_clip} frames, {config.motion_frames} motion frames, first clip motion: "
                    f"{config.first_clip_motion}, audio attention: {config.audio_attention}, "
                    f"speed layers: {'yes' if config.has_speed_layers else 'no'}, size {config.sample_size}px")
    lines += [
        f"family: {family}; config '{config.name}'",
        sampling,
        f"keys: {report.describe()}",
    ]
    return "\n".join(lines)
