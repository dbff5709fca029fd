"""Hand-pose sequences: what drives EchoMimic v2's gestures."""
