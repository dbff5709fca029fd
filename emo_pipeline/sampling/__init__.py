"""Sampling: the step types every loop shares (steps.py), the denoiser (denoiser.py), the schedulers and
presets, and one module per sampling loop (motion_frames.py, memo_memory.py, context_windows.py; the
clip loop they share is clip_loop.py). loops.py finds the loop a family's record names."""
