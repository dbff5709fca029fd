"""EMO Sample To Video: EMO Sampler writing each clip straight into the MP4 (pasted back into the photo
if one is given), so memory stays flat however long the audio is."""

from __future__ import annotations

import itertools
import logging
import os
import warnings

import comfy.model_management as mm
import folder_paths
import torch

from ..emo_pipeline.face import paste_back
from ..emo_pipeline.render_state import RenderState, carry_check, fingerprint, resumed_frames, state_folder
from ..emo_pipeline.upscale.video import UpscaleSettings, batched
from .face import DEFAULT_FEATHER, FEATHER, feather_pixels
from .notify import relays_warnings
from .sampler import EMOSampler, iter_frames, ran_text
from .upscale import upscaler
from .video import SAVE_INPUTS, open_video, saved_video


class EMOSampleToVideo:
    DESCRIPTION = ("EMO Sampler and EMO Video Combine in one: every clip goes into the MP4 as soon as it is "
                   "decoded, so no frame batch is held and a song of any length needs the memory of one clip. "
                   "With the original photo and EMO Face Crop's face connected, the frames are pasted back "
                   "into the photo first (as EMO Paste Back).")
    CATEGORY = "EMO"
    FUNCTION = "render"
    OUTPUT_NODE = True
    RETURN_TYPES = ("VIDEO", "STRING")
    RETURN_NAMES = ("video", "path")

    @classmethod
    def INPUT_TYPES(cls):
        sampler = EMOSampler.INPUT_TYPES()
        return {
            "required": {
                **sampler["required"],
                **SAVE_INPUTS,
            },
            "optional": {
                "soundtrack": ("AUDIO", {"tooltip": "The audio to put in the MP4 (usually the one encoded)."}),
                "original": ("IMAGE", {"tooltip": "The whole photo, to paste the frames back into (with face)."}),
                "face": ("EMO_FACE", {"tooltip": "From EMO Face Crop on that photo: where the frames go."}),
                **sampler["optional"],
                "feather": FEATHER,
                "colour_match": ("BOOLEAN", {"default": False,
                                             "tooltip": "Paste back: match the frames' colours to the photo's."}),
                "upscale": ("INT", {"default": 1, "min": 1, "max": 4,
                                    "tooltip": "Hallo2's high-resolution stage on each chunk of frames before any "
                                               "paste-back, as EMO Upscale Face Video (1: off; needs "
                                               "hallo2/net_g.pth, S-Lab licence: non-commercial)."}),
                "upscale_fidelity": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05,
                                               "tooltip": "Upscale: CodeFormer's w (0: its codebook's detail, "
                                                          "1: closer to the input)."}),
                "resume": ("BOOLEAN", {"default": True,
                           "tooltip": "Keep each finished clip beside the output (a hidden .<prefix>.emo-resume "
                                      "folder), so that a cancelled or failed run continues on the next Queue with "
                                      "the same inputs and settings. Removed once the MP4 is complete."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    @relays_warnings
    def render(self, model, reference, audio, seed, steps, cfg, preset, scheduler, filename_prefix, crf,
               soundtrack=None, original=None, face=None, options=None, feather=DEFAULT_FEATHER, colour_match=False,
               upscale=1, upscale_fidelity=0.5, resume=True, prompt=None, extra_pnginfo=None, poses=None,
               face_keypoints=None, emotions=None):
        if (original is None) != (face is None):
            raise ValueError("EMO Sample To Video pastes back only with both 'original' (the whole photo) and "
                             "'face' (EMO Face Crop's face output for it) connected; connect both or neither.")
        photo = None
        if original is not None:
            photo = (original[0] if original.ndim == 4 else original)[..., :3]
            height, width = photo.shape[:2]
            if (width, height) != (face.box.width, face.box.height):
                raise ValueError(f"EMO Sample To Video: 'original' is {width}×{height} but 'face' was found on a "
                                 f"{face.box.width}×{face.box.height} image; connect the photo given to EMO Face Crop.")
        else:
            height = width = model.pipeline.config.sample_size * upscale
        kept: dict[str, RenderState] = {}
        colour: list[torch.Tensor] = []  # the video's first frame: one colour correction for all clips

        def open_state(pipeline, options) -> RenderState:
            # one folder per prefix (the MP4's own name gets a new counter on every run)
            folder, name, _, _, _ = folder_paths.get_save_image_path(
                filename_prefix, folder_paths.get_output_directory(), width, height)
            sound = soundtrack["waveform"] if soundtrack is not None else None
            state = RenderState(state_folder(os.path.join(folder, name + ".mp4")), fingerprint(
                pipeline, reference, audio, options, sound=sound, image=photo, width=width, height=height, crf=crf,
                paste=[None if face is None else list(vars(face.box).values()), feather, colour_match],
                sample_rate=None if soundtrack is None else int(soundtrack["sample_rate"])),
                say=lambda message: warnings.warn(message, stacklevel=2),
                check_carry=carry_check(pipeline, audio, options), frame_shape=(height, width))
            if "colour_reference" in state.kept:
                colour.append(state.kept["colour_reference"])
            kept["state"] = state
            return state

        def paste(clip: torch.Tensor) -> torch.Tensor:
            if colour_match and not colour:
                colour.append(clip[0])
                if "state" in kept:  # a resumed run no longer makes the first frame
                    kept["state"].keep("colour_reference", clip[0])
            return paste_back(clip, photo, face.box, feather_pixels(feather, face.box.side),
                              colour[0] if colour else None)

        settings = UpscaleSettings(scale=upscale, fidelity=upscale_fidelity)
        settings.check()
        net = upscaler(mm.get_torch_device()) if upscale > 1 else None  # before sampling: a missing file stops here
        if net is not None and resume:  # its 16-frame chunks span clips: no per-clip progress to keep
            warnings.warn("EMO Sample To Video: with upscale, progress is not kept for resuming.", stacklevel=2)
        ran: list[str] = []
        clips = iter_frames(model, reference, audio, seed, steps, cfg, preset, scheduler, options,
                            resume=open_state if resume and net is None else None,
                            told=lambda used: ran.append(ran_text(used, preset)), poses=poses,
                            face_keypoints=face_keypoints, emotions=emotions)
        if net is not None:  # streamed: one 16-frame chunk held at a time
            clips = batched(net.stream(clips, settings,
                                       on_frame=lambda done: mm.throw_exception_if_processing_interrupted()))

        def video_frames():
            first = next(clips, None)  # the state opens once the model is loaded, before the first clip
            yield from resumed_frames(kept.get("state"), itertools.chain([] if first is None else [first], clips),
                                      paste if photo is not None else None)

        # the writer opens before sampling, so a bad prefix is refused before any work
        with open_video(filename_prefix, audio.fps, width, height, crf, soundtrack, prompt, extra_pnginfo) as writer:
            for frames in video_frames():
                writer.write(frames)
            if writer.frames != audio.num_frames:  # one frame per audio frame, or no file at all
                raise RuntimeError(f"EMO Sample To Video made {writer.frames} frames for {audio.num_frames} audio "
                                   "frames.")
        if "state" in kept:
            kept["state"].finish()
        shown = saved_video(writer.path)
        shown["ui"]["text"] = ran  # the steps, cfg and scheduler that ran (the preset may have decided them)
        logging.info("EMO Sample To Video: %s", " ".join(ran))
        return shown

