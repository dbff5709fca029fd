"""Stand-ins for ComfyUI's own modules (folder_paths, comfy.*, latent_preview, comfy_api), so the pack
can be loaded the way ComfyUI loads it without a ComfyUI checkout. Only ComfyUI is stubbed."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


class InterruptProcessingException(Exception):
    pass


class State:
    interrupted = False
    progress: list = []
    loads: list = []
    preview: bool = False
    previews: list = []  # the preview tuples sent with progress updates
    messages: list = []  # (event, data) sent to the frontend through PromptServer.send_sync
    free_memory: int = 16 * 2**30  # what core's get_free_memory reports


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def install(models_dir: Path, output_dir: Path) -> State:
    # folder_paths ------------------------------------------------------------
    folders: dict[str, tuple[list[str], set[str]]] = {}

    def add_model_folder_path(name, path, is_default=False):
        paths, _ = folders.setdefault(name, ([], set()))
        if path not in paths:
            paths.append(path)

    folders.setdefault("vae", ([str(models_dir / "vae")], set()))
    folders.setdefault("checkpoints", ([str(models_dir / "checkpoints")], {".ckpt", ".pt", ".pth", ".safetensors"}))
    # core registers models/audio_encoders (0.3.5x and later) with its usual extensions
    folders.setdefault("audio_encoders", ([str(models_dir / "audio_encoders")], {".pth", ".safetensors", ".ckpt", ".pt"}))

    def get_filename_list(name):
        paths, exts = folders.get(name, ([], set()))
        found = []
        for base in paths:
            for dirpath, _, files in os.walk(base):
                for f in files:
                    if not exts or os.path.splitext(f)[1] in exts:
                        found.append(os.path.relpath(os.path.join(dirpath, f), base))
        return sorted(found)

    def get_full_path(name, filename):
        filename = os.path.relpath(os.path.join("/", filename), "/")  # as core: no way out of the folder
        for base in folders.get(name, ([], set()))[0]:
            path = os.path.join(base, filename)
            if os.path.isfile(path):
                return path
        return None

    def get_save_image_path(prefix, output_dir, width=0, height=0):
        subfolder, name = os.path.split(os.path.normpath(prefix))
        folder = os.path.join(output_dir, subfolder)
        if os.path.commonpath((str(output_dir), os.path.abspath(folder))) != str(output_dir):
            raise Exception("**** ERROR: Saving image outside the output folder is not allowed.")  # as core
        existing = os.listdir(folder) if os.path.isdir(folder) else []
        counter = 1 + sum(1 for f in existing if f.startswith(name + "_"))
        return folder, name, counter, subfolder, prefix

    _module("folder_paths", models_dir=str(models_dir), folder_names_and_paths=folders,
            add_model_folder_path=add_model_folder_path, get_filename_list=get_filename_list,
            get_full_path=get_full_path, get_folder_paths=lambda name: list(folders.get(name, ([], set()))[0]),
            get_output_directory=lambda: str(output_dir), get_save_image_path=get_save_image_path,
            supported_pt_extensions={".pth", ".safetensors", ".ckpt"})

    # comfy.* -------------------------------------------------------------------
    state = State()
    state.progress, state.loads, state.messages, state.previews = [], [], [], []
    comfy = _module("comfy")

    def throw_if_interrupted():
        if state.interrupted:
            state.interrupted = False
            raise InterruptProcessingException()

    def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        state.loads.append((len(models), memory_required, force_full_load))
        for patcher in models:
            patcher.model.to(patcher.load_device)

    comfy.model_management = _module(
        "comfy.model_management", get_torch_device=lambda: torch.device("cpu"),
        get_free_memory=lambda dev=None, torch_free_too=False: state.free_memory,
        unet_offload_device=lambda: torch.device("cpu"), load_models_gpu=load_models_gpu,
        processing_interrupted=lambda: state.interrupted, throw_exception_if_processing_interrupted=throw_if_interrupted,
        InterruptProcessingException=InterruptProcessingException)

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
            self.model, self.load_device, self.offload_device = model, load_device, offload_device

    comfy.model_patcher = _module("comfy.model_patcher", ModelPatcher=ModelPatcher)

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total, self.current = total, 0

        def update_absolute(self, value, total=None, preview=None):
            self.total = total or self.total
            self.current = value
            state.progress.append((value, self.total, preview is not None))
            if preview is not None:
                state.previews.append(preview)
            throw_if_interrupted()  # ComfyUI's progress hook is a cancel point

    comfy.utils = _module("comfy.utils", ProgressBar=ProgressBar)
    comfy.latent_formats = _module("comfy.latent_formats", SD15=type("SD15", (), {"scale_factor": 0.18215}))
    comfy.cli_args = _module("comfy.cli_args", args=types.SimpleNamespace(disable_metadata=False))

    class Previewer:  # core's Latent2RGB previewer (SD's factors, the picture at most --preview-size)
        def decode_latent_to_preview_image(self, fmt, x0):
            assert x0.ndim == 4
            return (fmt, None, 512)

    class TAESDPreviewerImpl(Previewer):
        pass

    _module("latent_preview", get_previewer=lambda device, fmt: Previewer() if state.preview else None,
            TAESDPreviewerImpl=TAESDPreviewerImpl, MAX_PREVIEW_RESOLUTION=512)

    class VideoFromFile:
        def __init__(self, file):
            self.file = file

    class PromptServer:  # core's server.PromptServer: only what the pack uses
        on_prompt_handlers: list = []

        def send_sync(self, event, data, sid=None):
            state.messages.append((event, data))

        def add_on_prompt_handler(self, handler):
            self.on_prompt_handlers.append(handler)

        def trigger_on_prompt(self, json_data):  # as core: each handler in turn
            for handler in self.on_prompt_handlers:
                json_data = handler(json_data)
            return json_data

    PromptServer.instance = PromptServer()
    PromptServer.instance.on_prompt_handlers = []
    _module("server", PromptServer=PromptServer)

    api = _module("comfy_api")
    api.input_impl = _module("comfy_api.input_impl", VideoFromFile=VideoFromFile)
    return state


def load_pack():
    """Import the pack as ComfyUI's load_custom_node does: its __init__.py under a path-derived name."""
    module_name = str(ROOT).replace(".", "_x_")
    for name in [m for m in sys.modules if m == module_name or m.startswith(module_name + ".")]:
        del sys.modules[name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
