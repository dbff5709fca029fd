"""V-Express's self-contained parts, against answers worked out here, with no V-Express code and no OpenCV:

* the keypoint image (emo_pipeline/poses/face_keypoints.py): colours, where the dots and sticks lie, what the
  canvas edges cut, and OpenCV's line and ellipse rules in small cases. The whole renderer is held against
  V-Express's own draw_kps_image with OpenCV by benchmarks/vexpress_kps_drawing.py (0 pixels apart);
* the audio resampler (emo_pipeline/models/perceiver_resampler.py): its keys and shapes are those of V-Express's
  audio_projection in tests/data/vexpress_keys.tsv (written by tests/make_vexpress_keys.py from its own code),
  it loads strictly, and it computes the formula written out here in plain matrix products;
* the framing (emo_pipeline/audio/token_windows.py): each frame's ten tokens worked out by hand.
V-Express's own AudioProjection and framing are run beside ours by benchmarks/vexpress_parts_side_by_side.py.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from emo_pipeline.audio.token_windows import (encode_token_windows, frame_windows, last_layer, spread_to_frames,
                                              window_length)
from emo_pipeline.models.face_locator import FaceLocator
from emo_pipeline.models.perceiver_resampler import PerceiverResampler, PerceiverResamplerConfig
from emo_pipeline.poses import face_keypoints as fk

KEYS = Path(__file__).parent / "data" / "vexpress_keys.tsv"

BLACK = (0, 0, 0)
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
DARK_RED, DARK_GREEN = (153, 0, 0), (0, 153, 0)


def pixels_of(image: np.ndarray, colour: tuple[int, int, int]) -> set[tuple[int, int]]:
    """(row, col) of every pixel of one colour."""
    rows, cols = np.nonzero((image == np.array(colour, np.uint8)).all(axis=2))
    return set(zip(rows.tolist(), cols.tolist()))


def lattice_disc(cx: int, cy: int, height: int, width: int) -> set[tuple[int, int]]:
    """The pixels within distance 4 of (cx, cy), inside the image: OpenCV's filled radius-4 midpoint circle is
    this lattice disc (its rows reach 4, 3, 3, 2, 0 columns either side: x² + y² <= 16), 49 pixels whole."""
    return {(cy + dy, cx + dx) for dy in range(-4, 5) for dx in range(-4, 5)
            if dx * dx + dy * dy <= 16 and 0 <= cy + dy < height and 0 <= cx + dx < width}


def ellipse_distance(rows: np.ndarray, cols: np.ndarray, centre, a: float, b: float, degrees: float) -> np.ndarray:
    """How far outside the ellipse (centre, semi-axes a, b, turned by `degrees`) each pixel lies, in the
    ellipse's normalised radius (<= 1: inside)."""
    t = math.radians(degrees)
    x, y = cols - centre[0], rows - centre[1]
    u = x * math.cos(t) + y * math.sin(t)
    v = -x * math.sin(t) + y * math.cos(t)
    return np.sqrt((u / max(a, 1e-9)) ** 2 + (v / b) ** 2)


FACE = np.array([[193.2, 229.8], [312.5, 229.6], [252.1, 301.9]], np.float32)  # the spec's tys frame 0


def test_colours_and_order():
    image = fk.draw_face_keypoints(FACE, 512, 512)
    assert image.dtype == np.uint8 and image.shape == (512, 512, 3)
    colours = {tuple(c) for c in np.unique(image.reshape(-1, 3), axis=0).tolist()}
    assert colours == {BLACK, DARK_RED, DARK_GREEN, RED, GREEN, BLUE}
    # each dot is the full 49-pixel disc around the truncated point, drawn over the sticks
    for point, colour in zip(FACE, (RED, GREEN, BLUE)):
        assert pixels_of(image, colour) == lattice_disc(int(point[0]), int(point[1]), 512, 512)
    # the sticks: the left eye's (red, dimmed) to the nose, the right eye's (green, dimmed) to the nose
    for eye, colour in ((0, DARK_RED), (1, DARK_GREEN)):
        middle = (FACE[eye] + FACE[2]) / 2
        assert tuple(image[int(middle[1]), int(middle[0])]) == colour


def test_spec_fixture():
    """The pixel counts and digest the spec (docs/v-express-inference.md §3.3) took from V-Express's own
    draw_kps_image (OpenCV) for its tys frame."""
    image = fk.draw_face_keypoints(FACE, 512, 512)
    counts = {colour: len(pixels_of(image, colour)) for colour in (BLACK, DARK_RED, DARK_GREEN, RED, GREEN, BLUE)}
    assert counts == {BLACK: 260674, DARK_RED: 666, DARK_GREEN: 657, RED: 49, GREEN: 49, BLUE: 49}
    assert hashlib.sha256(image.tobytes()).hexdigest()[:16] == "832a8eccd16fb938"


@pytest.mark.parametrize("eye", [0, 1])
def test_sticks_fill_their_ellipse(eye):
    """A stick covers the ellipse on its two points (centre their truncated mean, semi-axes int(length / 2) and
    4, turned along the stick): all of it a pixel in from its outline, nothing a pixel beyond it."""
    image = fk.draw_face_keypoints(FACE, 512, 512)
    colour = (DARK_RED, DARK_GREEN)[eye]
    p, q = FACE[eye].astype(np.float64), FACE[2].astype(np.float64)
    centre = (int((p[0] + q[0]) / 2), int((p[1] + q[1]) / 2))
    a = int(np.hypot(*(p - q)) / 2)
    degrees = int(math.degrees(math.atan2(p[1] - q[1], p[0] - q[0])))
    rows, cols = np.mgrid[0:512, 0:512]
    stick = (image == np.array(colour, np.uint8)).all(axis=2)
    dots = (image != 0).any(axis=2) & ~stick
    # within one pixel of the outline either way (rounded corners, 8-connected sides)
    outer = ellipse_distance(rows, cols, centre, a + 1.0, 5.0, degrees) <= 1
    inner = ellipse_distance(rows, cols, centre, a - 1.0, 3.0, degrees) <= 1
    assert stick.sum() > 0
    assert not (stick & ~outer).any()
    assert not (inner & ~stick & ~dots).any()


def test_edges_cut_what_lies_outside():
    # a dot on the corner: the quarter of the disc inside, 17 pixels
    points = np.array([[0, 0], [40, 5], [20, 30]], np.float32)
    image = fk.draw_face_keypoints(points, 50, 60)
    assert pixels_of(image, RED) == lattice_disc(0, 0, 50, 60)
    assert len(pixels_of(image, RED)) == 17
    # int() truncates toward zero: -0.7 is column 0, not -1
    points = np.array([[-0.7, 20.0], [40, 5], [20, 30]], np.float32)
    assert pixels_of(fk.draw_face_keypoints(points, 50, 60), RED) == lattice_disc(0, 20, 50, 60)
    # a point 5 px beyond the right edge: no dot, its stick still reaches in
    points = np.array([[64.0, 20.0], [40, 5], [20, 30]], np.float32)
    image = fk.draw_face_keypoints(points, 50, 59)
    assert not pixels_of(image, RED)
    assert max(c for _, c in pixels_of(image, DARK_RED)) == 58
    # everything far outside: black
    points = np.array([[-300, -200], [-250, -220], [-270, -150]], np.float32)
    assert not fk.draw_face_keypoints(points, 40, 40).any()
    # a 1x1 canvas under a dot
    assert tuple(fk.draw_face_keypoints(np.array([[0, 0], [30, 0], [15, 20]], np.float32), 1, 1)[0, 0]) == RED


def test_translation_inside():
    """Moving every point by whole pixels moves the image (nothing reaches an edge; the coordinates, multiples
    of 1/8, stay exact in float32)."""
    rng = np.random.default_rng(3)
    for _ in range(10):
        points = (np.round(rng.uniform(30, 90, (3, 2)) * 8) / 8).astype(np.float32)
        small = fk.draw_face_keypoints(points, 120, 120)
        big = fk.draw_face_keypoints(points + np.float32(37), 200, 210)
        assert np.array_equal(big[37:157, 37:157], small)
        assert not big[:37].any() and not big[157:].any()


def test_zero_length_stick():
    """Both points of a stick on one pixel: the ellipse has semi-axes (0, 4) and, turned by 0 degrees, is the
    column of 9 pixels through it; the dots cover it here, so nothing of the stick shows around them."""
    polygon = fk.ellipse_polygon(10, 10, 0, 4, 0)
    assert {p for p in polygon} == {(10, y) for y in range(6, 15)}
    assert fk.ellipse_polygon(5, 7, 0, 0, 30) == [(5, 7), (5, 7)]  # one point: twice the centre


def test_ellipse_polygon_points():
    """ellipse2Poly's 361 degree steps, rounded to whole pixels, each within rounding of the ellipse, no
    point repeated twice in a row, the first again at the end."""
    polygon = fk.ellipse_polygon(100, 80, 40, 4, -129)
    assert polygon[0] == polygon[-1] and len(polygon) <= 361
    assert all(p != q for p, q in zip(polygon, polygon[1:]))
    # each a point of the turned ellipse at a whole degree, rounded: within half a pixel each way of one
    degree = np.radians(np.arange(361))
    t = math.radians(-129)
    u, v = 40 * np.cos(degree), 4 * np.sin(degree)
    exact = np.stack([100 + u * math.cos(t) - v * math.sin(t), 80 + u * math.sin(t) + v * math.cos(t)], 1)
    for point in polygon:
        assert np.abs(exact - np.array(point)).max(axis=1).min() <= 0.5 + 1e-5
    assert len(set(polygon)) >= 2 * (40 + 4)  # it goes round: at least a point a pixel along each side
    # the first point is the end of the long axis: (100 + 40 cos(-129°), 80 + 40 sin(-129°)) rounded
    assert polygon[0] == (round(100 + 40 * math.cos(math.radians(-129))), round(80 + 40 * math.sin(math.radians(-129))))


@pytest.mark.parametrize("ends", [(2, 3, 17, 9), (17, 9, 2, 3), (5, 1, 8, 20), (8, 20, 5, 1), (0, 0, 9, 9),
                                  (3, 5, 3, 5), (1, 7, 12, 7)])
def test_line_8(ends):
    """Bresenham's 8-connected line: one pixel a step along the longer axis, the ends included, every pixel
    within half a pixel of the true line across it (ties aside)."""
    x0, y0, x1, y1 = ends
    rows, cols = fk.line_8(x0, y0, x1, y1, 30, 30)
    steps = max(abs(x1 - x0), abs(y1 - y0))
    assert len(rows) == steps + 1
    assert {(y0, x0), (y1, x1)} <= set(zip(rows.tolist(), cols.tolist()))
    if steps:
        if abs(x1 - x0) >= abs(y1 - y0):
            exact = y0 + (cols - x0) * (y1 - y0) / (x1 - x0)
            assert sorted(cols.tolist()) == list(range(min(x0, x1), max(x0, x1) + 1))
            assert np.abs(rows - exact).max() <= 0.5
        else:
            exact = x0 + (rows - y0) * (x1 - x0) / (y1 - y0)
            assert sorted(rows.tolist()) == list(range(min(y0, y1), max(y0, y1) + 1))
            assert np.abs(cols - exact).max() <= 0.5


def test_line_8_clipped():
    """A line leaving the image keeps only pixels inside it."""
    rows, cols = fk.line_8(-5, 2, 12, 2, 10, 10)
    assert set(zip(rows.tolist(), cols.tolist())) == {(2, x) for x in range(10)}
    assert len(fk.line_8(-5, -3, -1, -9, 10, 10)[0]) == 0


def test_frames_and_dtypes():
    face = FACE / np.float32(3)
    sequence = np.stack([face, face, face + np.float32(3)])
    frames = fk.draw_face_keypoint_frames(sequence, 128, 120)
    assert frames.shape == (3, 128, 120, 3)
    assert frames[0].any() and np.array_equal(frames[0], frames[1]) and not np.array_equal(frames[0], frames[2])
    assert np.array_equal(frames[2], fk.draw_face_keypoints(face + np.float32(3), 128, 120))
    frames[0, 0, 0] = 7  # the frames are the caller's own, not the cache's
    assert not fk.draw_face_keypoints(face, 128, 120)[0, 0].any()
    # integer keypoints are drawn as floats would be
    ints = np.array([[20, 30], [60, 30], [40, 70]])
    assert np.array_equal(fk.draw_face_keypoints(ints, 90, 90), fk.draw_face_keypoints(ints.astype(np.float32), 90, 90))


def test_length_as_numpy_1():
    """The stick's length from float32 differences squared in float64 (numpy 1.x, which V-Express ran with):
    here the float32 arithmetic numpy 2 would use gives exactly 204.0 and semi-axis 102; float64, 203.99999628
    and 101."""
    points = np.array([[342.3822326660156, 254.59767150878906], [0.0, 0.0],
                       [515.522705078125, 362.4789733886719]], np.float32)
    dx, dy = points[0] - points[2]
    assert float(np.sqrt(np.float32(dx * dx) + np.float32(dy * dy))) == 204.0
    assert fk._stick(points[[0, 2]])[2] == 101


@pytest.mark.parametrize("bad", [np.zeros((2, 2)), np.zeros((3, 3)), np.array([[0, 0], [1, np.nan], [2, 2]]),
                                 np.array([[0, 0], [1, 1], [1e30, 2]])])
def test_refusals(bad):
    with pytest.raises(ValueError):
        fk.draw_face_keypoints(bad, 10, 10)
    with pytest.raises(ValueError):
        fk.draw_face_keypoints(FACE, 0, 10)


# ---------------------------------------------------------------------------------------------------------------
# The audio resampler


def reference_keys(network: str) -> dict[str, tuple[int, ...]]:
    """One network's keys and shapes from V-Express's key list."""
    keys = {}
    for line in KEYS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, key, shape = line.split("\t")
            if name == network:
                keys[key] = tuple(int(v) for v in shape.split(",") if v)
    return keys


def header_count(network: str) -> tuple[int, int]:
    for line in KEYS.read_text().splitlines():
        if line.startswith(f"# {network}: ") and " tensors, " in line:
            tensors, values = line.split(": ", 1)[1].split(" tensors, ")
            return int(tensors), int(values.split(" values")[0].replace(",", ""))
    raise AssertionError(f"no count for {network} in {KEYS.name}")


def test_resampler_has_the_keys_and_shapes_of_vexpress_audio_projection():
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in PerceiverResampler().state_dict().items()}
    reference = reference_keys("audio_projection")
    assert sorted(set(reference) - set(ours)) == [] and sorted(set(ours) - set(reference)) == []
    assert {k: v for k, v in ours.items() if reference[k] != v} == {}
    assert header_count("audio_projection") == (len(ours), sum(math.prod(s) for s in ours.values())) \
        == (52, 29_524_224)


def test_resampler_loads_strictly():
    """A state dict of exactly the key list's keys and shapes loads strictly; one key short, or one too many, is
    refused."""
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g) for k, s in reference_keys("audio_projection").items()}
    model = PerceiverResampler()
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.layers[3][1][3].weight, state["layers.3.1.3.weight"])
    assert torch.equal(model.latents, state["latents"])
    short = dict(state)
    del short["layers.2.0.to_kv.weight"]
    with pytest.raises(RuntimeError, match="layers.2.0.to_kv.weight"):
        PerceiverResampler().load_state_dict(short, strict=True)
    extra = dict(state, **{"to_latents_from_mean_pooled_seq.0.weight": torch.ones(768)})
    with pytest.raises(RuntimeError, match="to_latents_from_mean_pooled_seq"):
        PerceiverResampler().load_state_dict(extra, strict=True)


def test_keypoint_guider_is_a_three_channel_face_locator():
    """V-Express's v_kps_guider has our face locator's layout with 3 input channels (EchoMimic v2's pose
    encoder's): the same keys and shapes."""
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in FaceLocator(320, (16, 32, 96, 256), 3).state_dict().items()}
    assert ours == reference_keys("v_kps_guider")


TINY = PerceiverResamplerConfig(dim=8, depth=2, dim_head=4, heads=3, num_queries=3, embedding_dim=6, output_dim=7,
                                ff_mult=2, max_seq_len=5)


def resampler_by_hand(model: PerceiverResampler, x: torch.Tensor) -> torch.Tensor:
    """The resampler written out in matrix products, one row and one head at a time, from its parameters."""
    c = model.config
    p = {k: v.double() for k, v in model.state_dict().items()}

    def layer_norm(t, prefix):
        mean = t.mean(-1, keepdim=True)
        var = ((t - mean) ** 2).mean(-1, keepdim=True)
        return (t - mean) / torch.sqrt(var + 1e-5) * p[prefix + ".weight"] + p[prefix + ".bias"]

    rows = []
    for row in x.double():
        h = (row + p["pos_emb.weight"][: len(row)]) @ p["proj_in.weight"].T + p["proj_in.bias"]
        lat = p["latents"][0]
        for i in range(c.depth):
            a = f"layers.{i}.0."
            hn, ln = layer_norm(h, a + "norm1"), layer_norm(lat, a + "norm2")
            q = ln @ p[a + "to_q.weight"].T
            kv = torch.cat([hn, ln]) @ p[a + "to_kv.weight"].T
            k, v = kv[:, : c.heads * c.dim_head], kv[:, c.heads * c.dim_head:]
            heads = []
            for j in range(c.heads):
                cols = slice(j * c.dim_head, (j + 1) * c.dim_head)
                w = torch.softmax(q[:, cols] @ k[:, cols].T / math.sqrt(c.dim_head), dim=-1)
                heads.append(w @ v[:, cols])
            lat = torch.cat(heads, 1) @ p[a + "to_out.weight"].T + lat
            f = f"layers.{i}.1."
            up = layer_norm(lat, f + "0") @ p[f + "1.weight"].T
            lat = torch.nn.functional.gelu(up) @ p[f + "3.weight"].T + lat
        out = lat @ p["proj_out.weight"].T + p["proj_out.bias"]
        rows.append(layer_norm(out, "norm_out"))
    return torch.stack(rows)


def test_resampler_computes_its_formula():
    torch.manual_seed(0)
    model = PerceiverResampler(TINY).double()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.5)
    x = torch.randn(4, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(model(x), resampler_by_hand(model, x), atol=1e-12)
        # fewer tokens than max_seq_len take the first positions
        assert torch.allclose(model(x[:, :3]), resampler_by_hand(model, x[:, :3]), atol=1e-12)


def test_resampler_shapes_and_refusals():
    model = PerceiverResampler(TINY)
    assert model(torch.randn(9, 5, 6)).shape == (9, 3, 7)
    assert PerceiverResampler(depth=1).config == PerceiverResamplerConfig(depth=1)
    for bad in (torch.randn(2, 6, 6), torch.randn(2, 5, 5), torch.randn(5, 6), torch.randn(2, 0, 6)):
        with pytest.raises(ValueError):
            model(bad)
    with pytest.raises(TypeError):
        PerceiverResampler(TINY, depth=1)
    full = PerceiverResampler()
    with torch.no_grad():
        assert full(torch.randn(3, 10, 768)).shape == (3, 5, 768)


# ---------------------------------------------------------------------------------------------------------------
# The framing


def windows_by_hand(num_frames: int, frames) -> list[list[int]]:
    """With token j holding the number j + 1: frame i's window is tokens 2i-4 … 2i+5 (frames i-2 … i+2, two
    each), 0 where a token is before the first or past the last (2·num_frames tokens)."""
    out = []
    for i in frames:
        out.append([j + 1 if 0 <= j < 2 * num_frames else 0 for j in range(2 * i - 4, 2 * i + 6)])
    return out


@pytest.mark.parametrize("num_frames", [1, 2, 3, 7, 30])
def test_frame_windows_by_hand(num_frames):
    tokens = (torch.arange(2 * num_frames, dtype=torch.float32) + 1)[:, None].repeat(1, 3)
    windows = frame_windows(tokens, num_frames)
    assert windows.shape == (num_frames, 10, 3) and window_length() == 10
    assert windows[..., 0].long().tolist() == windows_by_hand(num_frames, range(num_frames))
    assert torch.equal(windows[..., 0], windows[..., 2])
    # frames taken a few at a time, in any order, are the same windows
    some = torch.tensor([num_frames - 1, 0, num_frames // 2])
    assert frame_windows(tokens, some)[..., 0].long().tolist() == windows_by_hand(num_frames, some.tolist())


def test_frame_windows_of_the_first_and_last_frames():
    """V-Express's own indexing, spelled out for 5 frames: 4 zero tokens each side of the 10 tokens, frame i
    reading [2i, 2i + 10) of that."""
    tokens = torch.arange(1, 11, dtype=torch.float32)[:, None]
    padded = torch.cat([torch.zeros(4, 1), tokens, torch.zeros(4, 1)])
    windows = frame_windows(tokens, 5)
    for i in range(5):
        assert torch.equal(windows[i], padded[2 * i: 2 * i + 10])
    assert windows[0, :, 0].tolist() == [0, 0, 0, 0, 1, 2, 3, 4, 5, 6]
    assert windows[4, :, 0].tolist() == [5, 6, 7, 8, 9, 10, 0, 0, 0, 0]


def test_frame_windows_other_shapes():
    tokens = torch.arange(1, 13, dtype=torch.float32)[:, None]  # 4 frames of 3 tokens
    windows = frame_windows(tokens, 4, per_frame=3, context=1)
    assert windows.shape == (4, 9, 1)
    assert windows[0, :, 0].tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 6]
    assert windows[3, :, 0].tolist() == [7, 8, 9, 10, 11, 12, 0, 0, 0]


def test_spread_to_frames_is_linear_over_the_clip():
    """A ramp h[t] = t interpolated to 2F tokens (align_corners False): token j samples the clip at
    (j + 0.5)·T/(2F) - 0.5, held at the ends."""
    steps, num_frames = 37, 11
    hidden = torch.arange(steps, dtype=torch.float32)[:, None].repeat(1, 4)
    tokens = spread_to_frames(hidden, num_frames)
    assert tokens.shape == (2 * num_frames, 4) and tokens.dtype == torch.float32
    expected = [min(max((j + 0.5) * steps / (2 * num_frames) - 0.5, 0.0), steps - 1.0) for j in range(2 * num_frames)]
    assert torch.allclose(tokens[:, 0], torch.tensor(expected), atol=1e-5)
    assert torch.equal(spread_to_frames(torch.ones(1, 2, dtype=torch.float16), 3), torch.ones(6, 2))  # float32 out
    with pytest.raises(ValueError):
        spread_to_frames(hidden, 0)
    with pytest.raises(ValueError):
        spread_to_frames(torch.zeros(0, 4), 3)


def test_encode_token_windows_with_a_small_wav2vec():
    """One frame per audio frame: 1.01 s at 25 fps is 26 frames, 52 tokens of the encoder's last layer."""
    from emo_pipeline.audio.encoder import AudioEncoder, normalize_speech
    from emo_pipeline.tiny import tiny_wav2vec

    encoder = AudioEncoder(tiny_wav2vec())
    speech = normalize_speech(torch.sin(torch.arange(16160) / 9.0))
    audio = encode_token_windows(encoder, speech, 25.0, 24)
    assert audio.num_frames == 26 and audio.features.shape == (52, 32)
    hidden = last_layer(encoder, speech)
    with torch.no_grad():
        assert torch.equal(hidden, encoder.model(speech[None]).last_hidden_state[0])
    assert hidden.shape == ((16160 - 400) // 320 + 1, 32)
    assert torch.equal(audio.features, spread_to_frames(hidden, 26))
    assert frame_windows(audio.features, torch.arange(20, 26)).shape == (6, 10, 32)
