"""Pose inputs: the hand-pose sequences that drive EchoMimic v2's gestures, and V-Express's face-keypoint
images."""
