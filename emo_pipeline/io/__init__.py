"""Files in and out: media (PyAV, Pillow), network checkpoints (loading.py), downloads from the hub, checks on
images and on the disk, and a render's kept progress (render_state.py)."""
