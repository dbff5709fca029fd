"""Which hub files each download fetches, and where our loaders read them: the one place that says so.

Each family's files are the ones its own project tells users to download (Hallo's and Hallo2's
READMEs: the fudan-generative-ai repositories, cloned into `pretrained_models/`; JoyHallo's: jdh-algo/JoyHallo-v1
with Hallo's base files and TencentGameMate/chinese-wav2vec2-base; V-Express's: tk93/V-Express's five networks, with
Hallo's copies of the base files its model_ckpts/ also holds; EchoMimic's:
BadToBest/EchoMimic into `pretrained_weights/`; MEMO's: memoavatar/memo, with the VAE from
stabilityai/sd-vae-ft-mse and wav2vec2 from facebook/wav2vec2-base-960h, as its
configs/inference.yaml names them), but only those our loaders read: never the SD1.5 UNet weights,
AnimateDiff's motion module, sd-image-variations or MEMO's emotion classifier (see docs/models.md).

Targets are relative to the model folder (ComfyUI's models/emo/, or `download --to`), in the layout
of the model-folder table in docs/models.md: a network's folder, with the VAE and wav2vec2 shared beside it.
`approx_bytes` are the hub's listed sizes, rounded; they label a download before the hub is asked
(the real sizes, from the hub, are what the disk check uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

MB = 10**6
GB = 10**9


@dataclass(frozen=True)
class HubFile:
    repo: str  # the hub repository, "owner/name"
    path: str  # the file's path in the repository
    target: str  # where our loaders read it, relative to the model folder
    approx_bytes: int
    part: str  # what it is part of, for the content check before placing (see checks.py's CHECKS)

    @property
    def of_network(self) -> bool:
        """A file of the family's network (what a conversion is made from): checked as one ("network") or, for
        V-Express's five files, one by one."""
        return self.part == "network" or self.part.startswith(VEXPRESS_PART)


@dataclass(frozen=True)
class Download:
    name: str  # what `download NAME` takes
    title: str
    files: tuple[HubFile, ...]
    model: str | None  # what to give --model (relative to the model folder); None for the optional parts
    licence: str
    # Written as our single safetensors file (in the family's GPU precision) after every download, not only with
    # --convert: EchoMimic v2's pickles hold the pose encoder's 1.09 M values in a 1.7 GB file.
    convert: bool = False

    @property
    def approx_bytes(self) -> int:
        return sum(f.approx_bytes for f in self.files)

    @property
    def licence_notice(self) -> str | None:
        """The line said before anything of this download is fetched, when its licence restricts use (non-commercial);
        None otherwise."""
        if "non-commercial" not in self.licence.lower():
            return None
        return f"Licence of {self.name}: {self.licence}."

    @property
    def converted(self) -> str | None:
        """Where the network is written as our single safetensors file, relative to the model folder:
        <name>.safetensors, inside the download's own folder when that folder holds its audio encoder (EchoMimic's
        audio_processor/whisper_tiny.pt), which the loader looks for beside the network."""
        if self.model is None:
            return None
        if any(f.part == "whisper" for f in self.files):
            return f"{PurePosixPath(self.model).parts[0]}/{self.name}.safetensors"
        return f"{self.name}.safetensors"

    @property
    def repos(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.repo for f in self.files))


def _vae(repo: str, folder: str = "") -> tuple[HubFile, ...]:
    """sd-vae-ft-mse as a diffusers folder, into the shared vae/."""
    return (HubFile(repo, folder + "config.json", "vae/config.json", 547, "vae"),
            HubFile(repo, folder + "diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                    335 * MB, "vae"))


def _wav2vec(repo: str, folder: str = "") -> tuple[HubFile, ...]:
    """wav2vec2-base-960h as a transformers folder, into the shared wav2vec/ (the tokenizer files are not read)."""
    return (HubFile(repo, folder + "config.json", "wav2vec/config.json", 1_600, "wav2vec"),
            HubFile(repo, folder + "preprocessor_config.json", "wav2vec/preprocessor_config.json", 159, "wav2vec"),
            HubFile(repo, folder + "model.safetensors", "wav2vec/model.safetensors", 378 * MB, "wav2vec"))


def _chinese_wav2vec(repo: str = "TencentGameMate/chinese-wav2vec2-base") -> tuple[HubFile, ...]:
    """JoyHallo's Mandarin wav2vec2, the folder its README clones (the pretraining checkpoint pytorch_model.bin, read
    weights-only; its fairseq checkpoint is not read), into chinese-wav2vec2-base/ beside the networks. Sizes
    estimated: the hub's listing could not be read here (95 M fp32 values with the pretraining heads)."""
    return tuple(HubFile(repo, name, f"chinese-wav2vec2-base/{name}", size, "wav2vec")
                 for name, size in (("config.json", 2_000), ("preprocessor_config.json", 200),
                                    ("pytorch_model.bin", 380 * MB)))


def _scrfd(repo: str, folder: str, target: str) -> HubFile:
    """insightface's SCRFD detector (10G, with the five landmarks)."""
    return HubFile(repo, folder + "scrfd_10g_bnkps.onnx", target + "scrfd_10g_bnkps.onnx", 17 * MB, "scrfd")


def _face(repo: str, folder: str, target: str) -> tuple[HubFile, ...]:
    """insightface's SCRFD detector and the ArcFace (glintr100) Hallo's identity embedding comes from."""
    return (_scrfd(repo, folder, target),
            HubFile(repo, folder + "glintr100.onnx", target + "glintr100.onnx", 261 * MB, "arcface"))


def _hallo(name: str) -> Download:
    repo = f"fudan-generative-ai/{name}"
    return Download(
        name=name,
        title=name.capitalize(),
        files=(HubFile(repo, f"{name}/net.pth", f"{name}/net.pth", 4_850 * MB, "network"),
               *_vae(repo, "sd-vae-ft-mse/"), *_wav2vec(repo, "wav2vec/wav2vec2-base-960h/"),
               *_face(repo, "face_analysis/models/", "face_analysis/models/")),
        model=name,
        licence="MIT",
    )


def _joyhallo() -> Download:
    """JoyHallo (its README): its net.pth from jdh-algo/JoyHallo-v1, Hallo's base files (the VAE, the face models)
    from fudan-generative-ai/hallo, and chinese-wav2vec2-base."""
    hallo = "fudan-generative-ai/hallo"
    return Download(
        name="joyhallo",
        title="JoyHallo (Mandarin)",
        # size estimated: 2.373 B values in fp16, as its training script saves them (the hub's listing not read here)
        files=(HubFile("jdh-algo/JoyHallo-v1", "net.pth", "joyhallo/net.pth", 4_750 * MB, "network"),
               *_vae(hallo, "sd-vae-ft-mse/"), *_chinese_wav2vec(),
               *_face(hallo, "face_analysis/models/", "face_analysis/models/")),
        model="joyhallo",
        licence="MIT",
    )


VEXPRESS = "tk93/V-Express"
VEXPRESS_PART = "vexpress_"  # + the file's stem: each of the five is checked as its own network (checks.py)
# The hub's listed sizes (its pages; the files themselves could not be fetched here), so estimates: fp16 pickles
# of 859.5 M, 1,363.5 M (the motion modules included), 454.4 M, 1.09 M and 29.5 M values
# (docs/v-express-inference.md §1.7).
VEXPRESS_FILES = {"reference_net.bin": 1_720 * MB, "denoising_unet.bin": 2_730 * MB, "motion_module.bin": 909 * MB,
                  "v_kps_guider.bin": 2_180_000, "audio_projection.bin": 59_100_000}


def _vexpress() -> Download:
    """V-Express (its README): the five networks at tk93/V-Express's root, into v-express/ as its loader reads them;
    the VAE, wav2vec2-base-960h and the SCRFD detector its reference keypoints come from (insightface's det_10g in its
    model_ckpts/) are the copies Hallo's download brings, from fudan-generative-ai/hallo, so a Hallo user has them."""
    hallo = "fudan-generative-ai/hallo"
    return Download(
        name="v-express",
        title="V-Express",
        files=(*(HubFile(VEXPRESS, name, f"v-express/{name}", size, VEXPRESS_PART + name.removesuffix(".bin"))
                 for name, size in VEXPRESS_FILES.items()),
               *_vae(hallo, "sd-vae-ft-mse/"), *_wav2vec(hallo, "wav2vec/wav2vec2-base-960h/"),
               _scrfd(hallo, "face_analysis/models/", "face_analysis/models/")),
        model="v-express",
        # its README (docs/v-express-inference.md §5): the code is free for commercial use, the checkpoints are not
        licence="V-Express's weights for non-commercial research only (its README: \"both manual-downloading and "
                "auto-downloading models from V-Express are for non-commercial research purposes\"); insightface's "
                "SCRFD detector: non-commercial research use",
    )


LATENTSYNC = "ByteDance/LatentSync-1.5"  # its auxiliary/ holds syncnet_python's SyncNet and S3FD weights
ECHOMIMIC = "BadToBest/EchoMimic"
MEMO = "memoavatar/memo"
EMOTION2VEC = "emotion2vec/emotion2vec_plus_large"


def _emotion() -> tuple[HubFile, ...]:
    """MEMO's emotion detector (audio/emotion.py): emotion2vec+ large, FunASR's model.pt as its hub repository holds it
    (read weights-only; its config.yaml is not read: the shape comes from the tensors), beside the networks, and
    MEMO's own classifier in its download's misc/. Sizes: emotion2vec's estimated (its network's 164 M fp32 values
    kept three times, as the hub's listed 1.95 GB suggests); the classifier's 14.7 M fp32 values."""
    return (HubFile(EMOTION2VEC, "model.pt", "emotion2vec_plus_large/model.pt", 1_950 * MB, "emotion2vec"),
            HubFile(MEMO, "misc/audio_emotion_classifier/diffusion_pytorch_model.safetensors",
                    "memo/misc/audio_emotion_classifier/diffusion_pytorch_model.safetensors", 59 * MB,
                    "emotion_classifier"))
MEMO_FOLDERS = {"reference_net": 3_430 * MB, "diffusion_net": 6_710 * MB, "image_proj": 6_310_000,
                "audio_proj": 146 * MB}


def _echomimic(variant: str) -> Download:
    networks = {"reference_unet.pth": 3_440 * MB, f"denoising_unet{variant}.pth": 3_350 * MB,
                f"motion_module{variant}.pth": 1_820 * MB, "face_locator.pth": 2 * MB}
    return Download(
        name="echomimic" + variant.replace("_", "-"),
        title="EchoMimic" + (" (accelerated, 6 steps)" if variant else ""),
        files=(*(HubFile(ECHOMIMIC, name, f"echomimic/{name}", size, "network") for name, size in networks.items()),
               HubFile(ECHOMIMIC, "audio_processor/whisper_tiny.pt", "echomimic/audio_processor/whisper_tiny.pt",
                       76 * MB, "whisper"),
               *_vae("stabilityai/sd-vae-ft-mse")),
        model=f"echomimic/denoising_unet{variant}.pth" if variant else "echomimic",
        licence="Apache-2.0",
    )


ECHOMIMIC_V2 = "BadToBest/EchoMimicV2"


def _echomimic_v2(variant: str) -> Download:
    # the hub's listed sizes: fp16 pickles, the _acc denoising UNet and motion modules fp32-sized;
    # pose_encoder.pth is listed at 1.7 GB although its 1.09 M values take 2.2 MB in fp16
    networks = {"reference_unet.pth": 1_630 * MB, f"denoising_unet{variant}.pth": (3_400 if variant else 1_700) * MB,
                f"motion_module{variant}.pth": (1_820 if variant else 909) * MB, "pose_encoder.pth": 1_700 * MB}
    return Download(
        name="echomimic-v2" + variant.replace("_", "-"),
        title="EchoMimic v2" + (" (accelerated, 6 steps)" if variant else ""),
        # its hub repository ships no whisper and no VAE: v1's whisper_tiny.pt and sd-vae-ft-mse, as its README says
        files=(*(HubFile(ECHOMIMIC_V2, name, f"echomimic_v2/{name}", size, "network") for name, size in networks.items()),
               HubFile(ECHOMIMIC, "audio_processor/whisper_tiny.pt", "echomimic_v2/audio_processor/whisper_tiny.pt",
                       76 * MB, "whisper"),
               *_vae("stabilityai/sd-vae-ft-mse")),
        model=f"echomimic_v2/denoising_unet{variant}.pth" if variant else "echomimic_v2",
        licence="Apache-2.0",
        convert=True,  # the networks in fp16 safetensors, the pose encoder at its true size (2.2 MB)
    )


DOWNLOADS: dict[str, Download] = {d.name: d for d in (
    _hallo("hallo"),
    _hallo("hallo2"),
    _echomimic(""),
    _echomimic("_acc"),
    _echomimic_v2(""),
    _echomimic_v2("_acc"),
    Download(
        name="memo",
        title="MEMO",
        files=(*(HubFile(MEMO, f"{folder}/{file}", f"memo/{folder}/{file}",
                         size if file.endswith("safetensors") else 2_000, "network")
                 for folder, size in MEMO_FOLDERS.items()
                 for file in ("config.json", "diffusion_pytorch_model.safetensors")),
               *_face(MEMO, "misc/face_analysis/models/", "memo/misc/face_analysis/models/"),
               *_vae("stabilityai/sd-vae-ft-mse"), *_wav2vec("facebook/wav2vec2-base-960h"), *_emotion()),
        model="memo",
        licence="Apache-2.0 (MEMO); emotion2vec+ large: see its model card (emotion2vec/emotion2vec_plus_large)",
    ),
    Download(
        name="emotion2vec",
        title="MEMO's emotion detector (emotion2vec+ large and MEMO's classifier: emotion auto)",
        files=_emotion(),
        model=None,
        licence="emotion2vec+ large: see its model card (emotion2vec/emotion2vec_plus_large; its licence could not "
                "be read here); MEMO's classifier: Apache-2.0",
    ),
    _joyhallo(),
    _vexpress(),
    Download(
        name="face",
        title="face models (SCRFD detector, ArcFace identity)",
        files=_face("fudan-generative-ai/hallo", "face_analysis/models/", "face_analysis/models/"),
        model=None,
        licence="insightface's pretrained models: non-commercial research use",
    ),
    Download(
        name="hallo2-upscaler",
        title="Hallo2's high-resolution stage (temporal CodeFormer, RealESRGAN x2)",
        # the layout of Hallo2's README (pretrained_models/hallo2/net_g.pth, realesrgan/RealESRGAN_x2plus.pth);
        # facelib's detectors and parsing network are not fetched: our detector aligns, our mask pastes back.
        # Sizes here are estimates (net_g.pth: 113 M fp32 values of the key list), not the hub's listing.
        files=(HubFile("fudan-generative-ai/hallo2", "hallo2/net_g.pth", "hallo2/net_g.pth", 452 * MB, "codeformer"),
               HubFile("fudan-generative-ai/hallo2", "realesrgan/RealESRGAN_x2plus.pth",
                       "realesrgan/RealESRGAN_x2plus.pth", 67 * MB, "realesrgan")),
        model=None,
        licence="S-Lab License 1.0 (non-commercial) for net_g.pth (CodeFormer's); BSD-3-Clause for RealESRGAN",
    ),
    Download(
        name="separator",
        title="vocal separator (Kim_Vocal_2, UVR MDX-Net)",
        files=(HubFile("fudan-generative-ai/hallo", "audio_separator/Kim_Vocal_2.onnx",
                       "audio_separator/Kim_Vocal_2.onnx", 67 * MB, "separator"),),
        model=None,
        licence="see the model card of huangjackson/Kim_Vocal_2",
    ),
    Download(
        name="metrics",
        title="SyncNet and S3FD (lip-sync scores: `evaluate`, EMO Evaluate)",
        # syncnet_python's two files as LatentSync mirrors them; sizes estimated from the networks' fp32 values
        # (54.6 M and 89.8 MB of tensors), not the hub's listing
        files=(HubFile(LATENTSYNC, "auxiliary/syncnet_v2.model", "metrics/syncnet_v2.model", 55 * MB, "syncnet"),
               HubFile(LATENTSYNC, "auxiliary/sfd_face.pth", "metrics/sfd_face.pth", 90 * MB, "s3fd")),
        model=None,
        licence="syncnet_python (joonson/syncnet_python, whose syncnet_v2.model and sfd_face.pth these are): MIT; "
                "the S3FD weights carry no licence of their own beyond that repository's; the licence of the "
                "ByteDance/LatentSync-1.5 hub repository that mirrors them was not confirmed here",
    ),
    Download(
        name="dwpose",
        title="DWPose (poses from a driving video, and fitting poses to a photo, for EchoMimic v2)",
        files=(HubFile("yzd-v/DWPose", "yolox_l.onnx", "dwpose/yolox_l.onnx", 217 * MB, "dwpose_detector"),
               HubFile("yzd-v/DWPose", "dw-ll_ucoco_384.onnx", "dwpose/dw-ll_ucoco_384.onnx", 134 * MB,
                       "dwpose_estimator")),
        model=None,
        licence="Apache-2.0, as DWPose's repository (IDEA-Research/DWPose) states it",
    ),
)}
FAMILIES = tuple(name for name, d in DOWNLOADS.items() if d.model is not None)
HUB = "https://huggingface.co"


def hub_url(f: HubFile, revision: str = "main") -> str:
    return f"{HUB}/{f.repo}/resolve/{revision}/{f.path}"


def file_for_target(target: str) -> HubFile | None:
    """The hub file our loaders read at `target` (a path in the model folder), if a download brings one."""
    return next((f for d in DOWNLOADS.values() for f in d.files if f.target == target), None)


# What ComfyUI's frontend offers to download with its own button (1.58.1; 1.27.10 only .safetensors and .sft):
# not .onnx, though it lists a missing .onnx with its metadata (URL and folder) instead of "Unknown".
FRONTEND_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pth", ".pt")


def workflow_models(values: list, directory: str = "emo") -> list[dict]:
    """ComfyUI's model metadata for a workflow's widget values that name a file a download brings (what the
    frontend's Missing Models panel lists): name, url and directory, each file once."""
    entries = {}
    for value in values:
        f = file_for_target(value) if isinstance(value, str) else None
        if f is not None:
            entries[value] = {"name": value, "url": hub_url(f), "directory": directory}
    return list(entries.values())


def human_size(n: float) -> str:
    """1.2 GB, 335 MB, 547 B: decimal units, as the hub lists sizes."""
    for unit, scale in (("GB", GB), ("MB", MB), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if n < 10 * scale else f"{n / scale:.0f} {unit}"
    return f"{int(n)} B"
