"""Quality as numbers, the way this field's papers score talking-head videos: lip sync by SyncNet (Sync-C, Sync-D
and the audio-video offset, on S3FD's tracked face crops and MFCCs of the sound) and identity by ArcFace (CSIM
against the portrait). Our own implementations, held against syncnet_python's code on shared weights."""
