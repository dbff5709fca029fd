"""Face analysis for the reference portrait: detection with five landmarks, ArcFace identity,
square face-centred cropping and pasting back."""

from .analysis import FaceAnalyzer, FaceInfo
from .crop import CropBox, crop_square, paste_back, square_crop_box

__all__ = ["CropBox", "FaceAnalyzer", "FaceInfo", "crop_square", "paste_back", "square_crop_box"]
