"""The content check of each part before it is placed: what our loaders will read, read as they read it.

A hash proves only that the bytes are the ones the server meant to send; a wrong or hostile mirror, a damaged
upload or a file copied in by hand is caught only by looking inside. Each part is checked without loading its
weights where its layout allows (key names and shapes against the network built on the meta device; an ONNX graph's
inputs and outputs):

    network     the family's strict key check (Hallo's net.pth; EchoMimic's four files; MEMO's four folders)
    vae         config.json builds a diffusers AutoencoderKL whose keys and shapes are those of the safetensors
    wav2vec     config.json builds a transformers Wav2Vec2Model, the same for model.safetensors (or pytorch_model.bin,
                chinese-wav2vec2-base's pretraining checkpoint, read weights-only); preprocessor JSON
    whisper     openai-whisper's tiny.pt: the encoder's keys and shapes for its own dims
    scrfd       one image input [N, 3, H, W]; nine outputs: scores, boxes and landmarks at three strides
    arcface     one input [N, 3, 112, 112]; one output of 512 values
    separator   Kim_Vocal_2's one input and output, [N, 4, 3072, 256]
    codeformer  Hallo2's net_g.pth (params_ema): every key and shape of the temporal CodeFormer
    realesrgan  RealESRGAN_x2plus.pth (params_ema): every key and shape of RRDBNet x2
    dwpose_detector   DWPose's yolox_l.onnx: one [1, 3, 640, 640] input; one [1, 8400, 85] output
    dwpose_estimator  DWPose's dw-ll_ucoco_384.onnx: one [1, 3, H, W] input; simcc_x [1, 133, 2W], simcc_y [1, 133, 2H]
    emotion2vec         emotion2vec+ large's model.pt read weights-only (memory-mapped): every tensor of the network its
                        shapes describe, and that network emotion2vec+ large (audio/emotion2vec.load_emotion2vec on meta)
    emotion_classifier  MEMO's classifier's safetensors: every key and shape (audio/emotion.load_classifier)
    syncnet     syncnet_v2.model read weights-only and loaded strictly by metrics/syncnet.load_syncnet (CPU)
    s3fd        sfd_face.pth read weights-only and loaded strictly by metrics/s3fd.load_s3fd (CPU)
    vexpress_*  V-Express's five .bin files one by one (read weights-only, memory-mapped): a few keys and shapes only
                that network has, and none it must not hold (the ReferenceNet no motion modules and no reference
                attention; motion_module.bin nothing but motion modules); the keypoint guider's every key and shape
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from ..io.errors import NamedPlainly
from .catalogue import VEXPRESS_PART, Download

class PartDamaged(NamedPlainly, Exception):
    """A part that our loaders could not use, with what is wrong in a few words."""


@dataclass(frozen=True)
class Unit:
    """What one check reads: a part at `path` (relative to the model folder), made of the files `targets`."""
    part: str
    path: str
    targets: tuple[str, ...]


def units_of(download: Download) -> list[Unit]:
    """The download's files grouped into what is checked together (a folder part as a whole, the network whole)."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for f in download.files:
        if f.part == "network":
            path = download.model
        elif f.part in ("vae", "wav2vec"):
            path = str(PurePosixPath(f.target).parent)
        else:
            path = f.target
        grouped.setdefault((f.part, path), []).append(f.target)
    return [Unit(part, path, tuple(targets)) for (part, path), targets in grouped.items()]


def check(unit: Unit, root: Path) -> None:
    """Raise PartDamaged when the part at root/unit.path is not what our loader reads; never anything else."""
    try:
        CHECKS[unit.part](root / unit.path)
    except PartDamaged:
        raise
    except Exception as error:  # noqa: BLE001  (any failure to read it is the finding)
        text = str(error).replace(str(root) + "/", "")
        raise PartDamaged(text.splitlines()[0][:400] if text else type(error).__name__) from None


# ---------------------------------------------------------------------------- the checks
def _network(path: Path) -> None:
    from ..io.loading import network_config
    from ..io.model_files import find_net

    network_config(find_net(path))


def _compare(expected: dict, found: dict, what: str, ignore_missing: tuple[str, ...] = (),
             ignore_unexpected: tuple[str, ...] = ()) -> None:
    from ..io.loading import compare_keys

    report = compare_keys(expected, found)
    report.missing = [k for k in report.missing if k not in ignore_missing]
    report.unexpected = [k for k in report.unexpected if not k.startswith(ignore_unexpected)] \
        if ignore_unexpected else report.unexpected
    if not report.ok:
        raise PartDamaged(f"{what}: {report.describe(3)}")


def _vae(folder: Path) -> None:
    from diffusers import AutoencoderKL
    import torch

    from ..io.loading import CheckpointReader, read_json_object

    config = read_json_object(folder / "config.json", "the VAE")
    try:
        with torch.device("meta"):
            vae = AutoencoderKL.from_config(config)
    except Exception as error:  # noqa: BLE001
        raise PartDamaged(f"config.json is no diffusers AutoencoderKL config ({type(error).__name__}: {error})") from None
    with CheckpointReader(folder / "diffusion_pytorch_model.safetensors") as reader:
        found = dict(reader.shapes)
    _compare({k: v.shape for k, v in vae.state_dict().items()}, found,
             "diffusion_pytorch_model.safetensors does not fit its config.json")


def _wav2vec(folder: Path) -> None:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from ..audio.encoder import FOLDER_WEIGHTS, HEADS, wav2vec2_key
    from ..io.loading import CheckpointReader, read_json_object

    config = read_json_object(folder / "config.json", "wav2vec2")
    read_json_object(folder / "preprocessor_config.json", "wav2vec2")
    try:
        with torch.device("meta"):
            model = Wav2Vec2Model(Wav2Vec2Config.from_dict(config))
    except Exception as error:  # noqa: BLE001
        raise PartDamaged(f"config.json is no transformers Wav2Vec2 config ({type(error).__name__}: {error})") from None
    weights = next((name for name in FOLDER_WEIGHTS if (folder / name).is_file()), FOLDER_WEIGHTS[0])
    with CheckpointReader(folder / weights) as reader:
        found = {wav2vec2_key(k): s for k, s in reader.shapes.items()}
    # masked_spec_embed is for training and may be left out; a CTC head (lm_head) or the pretraining heads are not read.
    _compare({k: v.shape for k, v in model.state_dict().items()}, found, f"{weights} does not fit its config.json",
             ignore_missing=("masked_spec_embed",), ignore_unexpected=HEADS)


def _whisper(path: Path) -> None:
    import torch

    from ..audio.whisper import WhisperAudioEncoder

    WhisperAudioEncoder.from_file(path, dtype=torch.float16)  # 76 MB: its own strict load is the check


def _onnx_io(path: Path) -> tuple[list[list], list[list]]:
    """The graph's inputs (initializers left out, as old exporters list them) and outputs, as lists of dims
    (an int, or None where the dimension is named or free)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001  (protobuf's DecodeError and friends)
        raise PartDamaged(f"not a readable ONNX model ({type(error).__name__}): the file is damaged") from None
    weights = {init.name for init in model.graph.initializer}

    def dims(value) -> list:
        return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]

    return ([dims(v) for v in model.graph.input if v.name not in weights], [dims(v) for v in model.graph.output])


def _fits(shape: list, expected: list) -> bool:
    return len(shape) == len(expected) and all(e is None or s is None or s == e for s, e in zip(shape, expected))


def _scrfd(path: Path) -> None:
    inputs, outputs = _onnx_io(path)
    widths = [o[-1] if o else None for o in outputs]
    if len(inputs) != 1 or not _fits(inputs[0], [None, 3, None, None]) or len(outputs) != 9 \
            or any(w not in (None, e) for w, e in zip(widths, [1, 1, 1, 4, 4, 4, 10, 10, 10])):
        raise PartDamaged(f"not an SCRFD detector with landmarks: inputs {inputs}, outputs {outputs} (expected one "
                          "[N, 3, H, W] input and nine outputs: scores, boxes, landmarks at three strides)")


def _arcface(path: Path) -> None:
    inputs, outputs = _onnx_io(path)
    if len(inputs) != 1 or not _fits(inputs[0], [None, 3, 112, 112]) or len(outputs) != 1 or \
            not outputs[0] or outputs[0][-1] not in (None, 512):
        raise PartDamaged(f"not an ArcFace embedder: inputs {inputs}, outputs {outputs} (expected [N, 3, 112, 112] "
                          "in, 512 values out)")


def _separator(path: Path) -> None:
    from ..audio.separation import KIM_VOCAL_2

    inputs, outputs = _onnx_io(path)
    shape = [None, 4, KIM_VOCAL_2.dim_f, KIM_VOCAL_2.dim_t]
    if len(inputs) != 1 or not _fits(inputs[0], shape) or len(outputs) != 1 or not _fits(outputs[0], shape):
        raise PartDamaged(f"not a Kim_Vocal_2-style MDX separator: inputs {inputs}, outputs {outputs} (expected one "
                          f"input and one output of [N, 4, {KIM_VOCAL_2.dim_f}, {KIM_VOCAL_2.dim_t}])")


def _dwpose_detector(path: Path) -> None:
    from ..poses.dwpose import detector_problem

    problem = detector_problem(*_onnx_io(path))
    if problem:
        raise PartDamaged(problem)


def _dwpose_estimator(path: Path) -> None:
    from ..poses.dwpose import estimator_problem

    problem = estimator_problem(*_onnx_io(path))
    if problem:
        raise PartDamaged(problem)


def codeformer_config():
    from ..upscale.codeformer import HALLO2_SR

    return HALLO2_SR


def rrdb_config():
    from ..upscale.rrdbnet import REALESRGAN_X2PLUS

    return REALESRGAN_X2PLUS


def _basicsr(path: Path, build: Callable[[], "object"], what: str) -> None:
    import torch

    from ..upscale.loading import read_state

    state = read_state(path)
    with torch.device("meta"):
        net = build()
    _compare({k: v.shape for k, v in net.state_dict().items()}, {k: v.shape for k, v in state.items()},
             f"not {what}")


def _codeformer(path: Path) -> None:
    from ..upscale.codeformer import TemporalCodeFormer

    _basicsr(path, lambda: TemporalCodeFormer(codeformer_config()), "Hallo2's temporal CodeFormer")


def _realesrgan(path: Path) -> None:
    from ..upscale.rrdbnet import RRDBNet

    _basicsr(path, lambda: RRDBNet(rrdb_config()), "RealESRGAN x2 (RRDBNet)")


def _syncnet(path: Path) -> None:
    from ..metrics.syncnet import load_syncnet

    load_syncnet(path)  # 55 MB on the CPU: its own weights-only read and strict key and shape check


def _s3fd(path: Path) -> None:
    from ..metrics.s3fd import load_s3fd

    load_s3fd(path, "cpu")  # 90 MB on the CPU: the same


# ---------------------------------------------------------------------------- V-Express
# Its five hub files are flat fp16 state dicts, one network each (docs/v-express-inference.md §1.7); names and shapes
# as V-Express's own code builds them (tests/data/vexpress_keys.tsv). The keys named are small tensors (norms, biases,
# conv_in's 4 latent channels) whose shapes give each network's widths, so a file of a wrong width fails too. The two
# UNets share most names: the denoising UNet alone has reference attention (attn1_5, norm1_5) and motion modules.
MOTION = ".motion_modules."
REFERENCE_ATTENTION = (".attn1_5.", ".norm1_5.")


def _vkps_guider_shapes() -> dict[str, tuple[int, ...]]:
    """VKpsGuider(320, block_out_channels=(16, 32, 96, 256)): conv_in 3→16, a same-width and a stride-2 conv per
    step, conv_out 256→320; all 3x3 with bias (16 tensors, 1.09 M values)."""
    channels, shapes = (16, 32, 96, 256), {"conv_in.weight": (16, 3, 3, 3), "conv_in.bias": (16,)}
    for step, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        for index, out in ((2 * step, c_in), (2 * step + 1, c_out)):
            shapes |= {f"blocks.{index}.weight": (out, c_in, 3, 3), f"blocks.{index}.bias": (out,)}
    return shapes | {"conv_out.weight": (320, 256, 3, 3), "conv_out.bias": (320,)}


VEXPRESS_KEYS: dict[str, dict[str, tuple[int, ...]]] = {
    "reference_net": {
        "conv_in.weight": (320, 4, 3, 3),
        "time_embedding.linear_1.bias": (1280,),
        "down_blocks.0.attentions.0.transformer_blocks.0.norm2.weight": (320,),
        "mid_block.attentions.0.transformer_blocks.0.norm2.weight": (1280,),
        "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_out.0.bias": (320,),
    },
    "denoising_unet": {
        "conv_in.weight": (320, 4, 3, 3),
        "conv_norm_out.weight": (320,),
        "down_blocks.0.attentions.0.transformer_blocks.0.norm1_5.weight": (320,),
        "up_blocks.3.attentions.2.transformer_blocks.0.attn1_5.to_out.0.bias": (320,),
        "down_blocks.0.motion_modules.0.temporal_transformer.norm.weight": (320,),
        "mid_block.motion_modules.0.temporal_transformer.norm.weight": (1280,),
        "up_blocks.3.motion_modules.2.temporal_transformer.proj_out.bias": (320,),
    },
    "motion_module": {
        "down_blocks.0.motion_modules.0.temporal_transformer.norm.weight": (320,),
        "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.norms.1.weight": (320,),
        "mid_block.motion_modules.0.temporal_transformer.norm.weight": (1280,),
        "up_blocks.3.motion_modules.2.temporal_transformer.proj_out.bias": (320,),
    },
    "v_kps_guider": _vkps_guider_shapes(),
    "audio_projection": {
        "latents": (1, 5, 768),
        "pos_emb.weight": (10, 768),
        "proj_in.bias": (768,),
        "layers.3.0.norm1.weight": (768,),
        "layers.3.1.0.weight": (768,),
        "norm_out.weight": (768,),
    },
}
VEXPRESS_TITLES = {"reference_net": "V-Express's ReferenceNet", "denoising_unet": "V-Express's denoising UNet",
                   "motion_module": "V-Express's motion modules", "v_kps_guider": "V-Express's V-Kps guider",
                   "audio_projection": "V-Express's audio projection"}


def _vexpress_foreign(network: str, keys: list[str]) -> list[str]:
    """Keys the file must not hold, for what it is said to be."""
    if network == "reference_net":  # these make a denoising UNet (or its motion part), not the ReferenceNet
        return [k for k in keys if MOTION in k or any(a in k for a in REFERENCE_ATTENTION)]
    if network == "motion_module":
        return [k for k in keys if MOTION not in k]
    if network == "v_kps_guider":  # strict: the whole network is its 16 tensors
        return [k for k in keys if k not in VEXPRESS_KEYS[network]]
    return []


def _vexpress(network: str) -> Callable[[Path], None]:
    def check_file(path: Path) -> None:
        from ..io.loading import CheckpointReader

        with CheckpointReader(path) as reader:  # weights_only (a pickle carrying code is refused), nothing loaded
            shapes = {k: tuple(s) for k, s in reader.shapes.items()}
        expected = VEXPRESS_KEYS[network]
        missing = [k for k in expected if k not in shapes]
        wrong = [f"{k} {list(shapes[k])} (expected {list(s)})" for k, s in expected.items()
                 if k in shapes and shapes[k] != s]
        foreign = _vexpress_foreign(network, list(shapes))
        if not (missing or wrong or foreign):
            return
        def some(items: list[str], n: int) -> str:
            return ", ".join(items[:n]) + (", ..." if len(items) > n else "")

        said = []
        if missing:
            said.append(f"{len(missing)} of its keys missing ({some(missing, 3)})")
        if wrong:
            said.append(f"wrong shapes: {some(wrong, 3)}")
        if foreign:
            said.append(f"{len(foreign)} keys it must not hold ({some(foreign, 2)})")
        raise PartDamaged(f"not {VEXPRESS_TITLES[network]} ({len(shapes)} tensors): {'; '.join(said)}")

    return check_file


def _emotion2vec(path: Path) -> None:
    from ..audio import emotion
    from ..audio.emotion2vec import load_emotion2vec

    load_emotion2vec(path, expected=emotion.ENCODER_SHAPE, device="meta")  # names and shapes; no data read


def _emotion_classifier(path: Path) -> None:
    from ..audio.emotion import load_classifier

    load_classifier(path)


CHECKS: dict[str, Callable[[Path], None]] = {
    "network": _network, "vae": _vae, "wav2vec": _wav2vec, "whisper": _whisper, "scrfd": _scrfd, "arcface": _arcface,
    "separator": _separator, "codeformer": _codeformer, "realesrgan": _realesrgan,
    "dwpose_detector": _dwpose_detector, "dwpose_estimator": _dwpose_estimator,
    "syncnet": _syncnet, "s3fd": _s3fd, "emotion2vec": _emotion2vec, "emotion_classifier": _emotion_classifier,
    **{VEXPRESS_PART + network: _vexpress(network) for network in VEXPRESS_KEYS},
}

