"""Hallo2's high-resolution stage: face videos restored and upscaled by its temporal CodeFormer, with the
background upscaled by RealESRGAN (S-Lab License 1.0, non-commercial: see docs/upscaler.md)."""
