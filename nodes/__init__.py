"""ComfyUI adapters for the EMO engine."""

from .audio import EMOEncodeAudio
from .demo import EMODemoInputs
from .evaluate import EMOEvaluate
from .face import EMOFaceCrop, EMOPasteBack
from .emotion import EMODetectEmotion
from .face_keypoints import EMOLoadFaceKeypoints
from .model_loader import LoadEMOModel
from .notify import DISPLAY_NAMES
from .poses import EMOLoadPoses, EMOPreviewPoses
from .reference import EMOReferenceNetEncode
from .sample_to_video import EMOSampleToVideo
from .separate_vocals import EMOSeparateVocals
from .sampler import EMOSampler
from .sampler_options import EMOFamilyOptions, EMOSamplerOptions
from .upscale import EMOUpscaleFaceVideo
from .video import EMOVideoCombine

NODE_CLASS_MAPPINGS = {
    "LoadEMOModel": LoadEMOModel,
    "EMOEncodeAudio": EMOEncodeAudio,
    "EMOReferenceNetEncode": EMOReferenceNetEncode,
    "EMOSampler": EMOSampler,
    "EMOSamplerOptions": EMOSamplerOptions,
    "EMOFamilyOptions": EMOFamilyOptions,
    "EMOSampleToVideo": EMOSampleToVideo,
    "EMOSeparateVocals": EMOSeparateVocals,
    "EMOVideoCombine": EMOVideoCombine,
    "EMOFaceCrop": EMOFaceCrop,
    "EMOPasteBack": EMOPasteBack,
    "EMODemoInputs": EMODemoInputs,
    "EMOUpscaleFaceVideo": EMOUpscaleFaceVideo,
    "EMOLoadPoses": EMOLoadPoses,
    "EMOPreviewPoses": EMOPreviewPoses,
    "EMOLoadFaceKeypoints": EMOLoadFaceKeypoints,
    "EMODetectEmotion": EMODetectEmotion,
    "EMOEvaluate": EMOEvaluate,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadEMOModel": "Load EMO Model",
    "EMOEncodeAudio": "EMO Encode Audio",
    "EMOReferenceNetEncode": "EMO ReferenceNet Encode",
    "EMOSampler": "EMO Sampler",
    "EMOSamplerOptions": "EMO Sampler Options",
    "EMOFamilyOptions": "EMO Family Options",
    "EMOSampleToVideo": "EMO Sample To Video",
    "EMOSeparateVocals": "EMO Separate Vocals",
    "EMOVideoCombine": "EMO Video Combine",
    "EMOFaceCrop": "EMO Face Crop",
    "EMOPasteBack": "EMO Paste Back",
    "EMODemoInputs": "EMO Demo Inputs",
    "EMOUpscaleFaceVideo": "EMO Upscale Face Video",
    "EMOLoadPoses": "EMO Load Poses",
    "EMOPreviewPoses": "EMO Preview Poses",
    "EMOLoadFaceKeypoints": "EMO Load Face Keypoints",
    "EMODetectEmotion": "EMO Detect Emotion",
    "EMOEvaluate": "EMO Evaluate",
}

# warnings sent to the graph name the node as the graph shows it
DISPLAY_NAMES.update({cls.__name__: NODE_DISPLAY_NAME_MAPPINGS[key] for key, cls in NODE_CLASS_MAPPINGS.items()})
