"""Face analysis on real photographs (scikit-image's samples) and on ONNX models the tests write
in SCRFD's and ArcFace's input/output format, checked against independent computations."""

import numpy as np
import pytest
import torch
from skimage import data

from emo_pipeline.face import FaceAnalyzer, crop_square, paste_back, square_crop_box
from emo_pipeline.face.reference import crop_to_face
from emo_pipeline.portrait import prepare_portrait

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

# Where Eileen Collins's face is in skimage.data.astronaut() (512×512), checked by eye: brow to chin.
ASTRONAUT_FACE = (175, 55, 275, 185)


def photo(name: str) -> torch.Tensor:
    return torch.from_numpy(getattr(data, name)()).float() / 255


def test_cascade_finds_the_astronauts_face():
    faces = FaceAnalyzer([]).faces(getattr(data, "astronaut")())
    x0, y0, x1, y1 = faces[0].box  # largest first
    fx0, fy0, fx1, fy1 = ASTRONAUT_FACE
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    assert fx0 < cx < fx1 and fy0 < cy < fy1  # centred on the face
    assert x0 < fx0 + 20 and x1 > fx1 - 20 and y0 < fy0 + 25 and y1 > fy1 - 25  # covers it
    assert faces[0].embedding is None and faces[0].landmarks is None


@pytest.mark.parametrize("fraction", [0.5, 0.6, 0.7])
def test_crop_is_square_centred_on_the_face(fraction):
    crop = crop_to_face(photo("astronaut"), FaceAnalyzer([]), face_fraction=fraction)
    side = crop.box.side
    assert crop.image.shape == (side, side, 3)
    fx0, fy0, fx1, fy1 = crop.face_box
    assert abs((fx0 + fx1) / 2 - 0.5) < 0.02 and abs((fy0 + fy1) / 2 - 0.5) < 0.02
    assert max(fx1 - fx0, fy1 - fy0) == pytest.approx(fraction, abs=0.02)
    # the crop shows the photo's pixels at the box
    original = photo("astronaut")
    torch.testing.assert_close(crop.image[10, 10], original[crop.box.y0 + 10, crop.box.x0 + 10])


def test_huge_grey_and_rgba_photos():
    import time

    from PIL import Image

    big = np.asarray(Image.fromarray(data.astronaut()).resize((2048, 2048), Image.BILINEAR))
    start = time.perf_counter()
    crop = crop_to_face(torch.from_numpy(big).float() / 255, FaceAnalyzer([]))
    assert time.perf_counter() - start < 10  # searched at 640 px, not 2048
    x0, y0, x1, y1 = (v * crop.box.side for v in crop.face_box)
    cx, cy = crop.box.x0 + (x0 + x1) / 2, crop.box.y0 + (y0 + y1) / 2
    assert 4 * 175 < cx < 4 * 275 and 4 * 55 < cy < 4 * 185  # the same face, in the big photo's pixels
    grey = photo("astronaut").mean(-1, keepdim=True)
    assert crop_to_face(grey, FaceAnalyzer([])).faces_found >= 1
    rgba = torch.cat([photo("astronaut"), torch.ones(512, 512, 1)], dim=-1)
    assert crop_to_face(rgba, FaceAnalyzer([])).image.shape[-1] == 3


def test_no_face_gives_the_centred_square_and_no_identity():
    crop = crop_to_face(photo("coffee"), FaceAnalyzer([]))  # 600×400, a cup of coffee
    assert crop.faces_found == 0 and crop.face_box is None and crop.identity is None
    assert (crop.box.x0, crop.box.y0, crop.box.side) == (100, 0, 400)


def test_face_index_out_of_range():
    with pytest.raises(ValueError, match=r"face_index 5 .* 1 face\(s\) were found"):  # one person (see below)
        crop_to_face(photo("astronaut"), FaceAnalyzer([]), face_index=5)


def test_crop_slides_inside_the_image_and_pads_only_when_too_big():
    original = photo("astronaut")
    near_edge = original[40:, 150:]  # the face near the top-left corner
    crop = crop_to_face(near_edge, FaceAnalyzer([]))
    h, w = near_edge.shape[:2]
    box = crop.box
    assert box.x0 >= 0 and box.y0 >= 0 and box.x0 + box.side <= w and box.y0 + box.side <= h
    fx0, fy0, fx1, fy1 = crop.face_box
    assert 0 <= fx0 < fx1 <= 1 and 0 <= fy0 < fy1 <= 1  # the whole face is in the crop
    tight = original[60:200, 160:300]  # 140×140 around the face: the square must be larger
    crop = crop_to_face(tight, FaceAnalyzer([]), face_fraction=0.5)
    assert crop.box.side > 140 and crop.box.x0 < 0 and crop.box.y0 < 0
    fx0, fy0, fx1, fy1 = crop.face_box
    assert abs((fx0 + fx1) / 2 - 0.5) < 0.05  # centred, with edge pixels repeated around
    torch.testing.assert_close(crop.image[0, 0], tight[0, 0])


def test_masks_from_the_crop_have_the_right_shapes_and_lips_inside_the_face():
    crop = crop_to_face(photo("astronaut"), FaceAnalyzer([]))
    portrait = prepare_portrait(crop.image, 512, 512, 64, face_box=crop.face_box, lip_box=crop.lip_box)
    assert [m.full.shape[0] for m in portrait.masks] == [64 * 64, 32 * 32, 16 * 16, 8 * 8]
    for m in portrait.masks:
        for t in (m.full, m.face, m.lip):
            assert 0 <= t.min() and t.max() <= 1
    level = portrait.masks[0]
    face_blur = 1 - level.full
    lips = level.lip > 0.2
    assert lips.any() and (face_blur[lips] > 0.5).all()  # lips inside the face region
    lip_rows = torch.nonzero(lips.view(64, 64))[:, 0].float().mean() / 64
    fx0, fy0, fx1, fy1 = crop.face_box
    assert fy0 + 0.5 * (fy1 - fy0) < lip_rows < fy1  # in the lower half of the face


def test_paste_back_restores_size_and_leaves_outside_pixels_alone():
    original = photo("astronaut")
    box = square_crop_box(ASTRONAUT_FACE, 512, 512)
    frames = torch.rand(3, 64, 64, 3)
    out = paste_back(frames, original, box)
    assert out.shape == (3, 512, 512, 3)
    inside = torch.zeros(512, 512, dtype=torch.bool)
    inside[max(box.y0, 0): box.y0 + box.side, max(box.x0, 0): box.x0 + box.side] = True
    assert torch.equal(out[:, ~inside], original[~inside].expand(3, -1, -1))
    assert not torch.equal(out[:, inside], original[inside].expand(3, -1, -1))
    # a crop that reaches past the edge pastes only its part inside the image
    edge = square_crop_box((0, 0, 60, 60), 512, 512, face_fraction=0.25)
    assert paste_back(torch.rand(1, 32, 32, 3), original, edge).shape == (1, 512, 512, 3)
    with pytest.raises(ValueError, match="crop was made on"):
        paste_back(frames, original[:100], box)


# ----------------------------------------------------------------------------- ONNX formats
STRIDES = (8, 16, 32)
KPS_OFFSETS = np.array([-1.0, -0.8, 1.0, -0.8, 0.0, 0.0, -0.7, 0.9, 0.7, 0.9], np.float32)
DIST = np.array([2.0, 2.5, 2.0, 2.5], np.float32)
# (stride, anchor index, score boost): a face at stride 8, a weaker duplicate of it at stride 16
# (must be suppressed), and a second face at stride 32.
PLANTED = [(8, 2 * (40 * 80 + 30), 0.0), (16, 2 * (20 * 40 + 15), -0.2), (32, 2 * (5 * 20 + 12) + 1, 0.0)]


def scrfd_model(path):
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Mul", ["m", "c04"], ["m4"]), helper.make_node("Add", ["m4", "c05"], ["planted"])]
    inits = [numpy_helper.from_array(np.array([0.4], np.float32), "c04"),
             numpy_helper.from_array(np.array([0.5], np.float32), "c05")]
    outputs = {"score": [], "bbox": [], "kps": []}
    for stride in STRIDES:
        n = (640 // stride) ** 2 * 2
        onehot, boost = np.zeros((n, 1), np.float32), np.full((n, 1), 0.01, np.float32)
        for s, index, extra in PLANTED:
            if s == stride:
                onehot[index], boost[index] = 1.0, extra
        inits += [numpy_helper.from_array(onehot, f"onehot{stride}"), numpy_helper.from_array(boost, f"base{stride}"),
                  numpy_helper.from_array(np.tile(DIST, (n, 1)), f"bbox{stride}"),
                  numpy_helper.from_array(np.tile(KPS_OFFSETS, (n, 1)), f"kps{stride}")]
        nodes += [helper.make_node("Mul", [f"onehot{stride}", "planted"], [f"p{stride}"]),
                  helper.make_node("Add", [f"p{stride}", f"base{stride}"], [f"score_{stride}"]),
                  helper.make_node("Identity", [f"bbox{stride}"], [f"bbox_{stride}"]),
                  helper.make_node("Identity", [f"kps{stride}"], [f"kps_{stride}"])]
        for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
            outputs[kind].append(helper.make_tensor_value_info(f"{kind}_{stride}", TensorProto.FLOAT, [n, width]))
    graph = helper.make_graph(nodes, "scrfd_format", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT,
                              [1, 3, 640, 640])], outputs["score"] + outputs["bbox"] + outputs["kps"], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def arcface_model(path, weights):
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["mean"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["mean", "w"], ["683"])]
    graph = helper.make_graph(nodes, "arcface_format", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT,
                              [1, 3, 112, 112])], [helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, 512])],
                              [numpy_helper.from_array(weights, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


@pytest.fixture
def onnx_models(tmp_path):
    folder = tmp_path / "face_analysis" / "models"
    folder.mkdir(parents=True)
    scrfd_model(folder / "scrfd_10g_bnkps.onnx")
    weights = np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32)
    arcface_model(folder / "glintr100.onnx", weights)
    return tmp_path, weights


def expected_detection(stride, index, scale):
    cell = index // 2
    n = 640 // stride
    cx, cy = (cell % n) * stride, (cell // n) * stride
    box = np.array([cx - DIST[0] * stride, cy - DIST[1] * stride, cx + DIST[2] * stride, cy + DIST[3] * stride])
    kps = (np.array([cx, cy] * 5) + KPS_OFFSETS * stride).reshape(5, 2)
    return box / scale, kps / scale


def umeyama(src, dst):
    """Least-squares similarity transform (Umeyama 1991), written here independently."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    scale = (sig * np.diag(d)).sum() / s_c.var(0).sum()
    return scale * rot, mu_d - scale * rot @ mu_s


def bilinear_warp(image, a, t, size=112):
    inv = np.linalg.inv(a)
    ys, xs = np.mgrid[:size, :size]
    dst = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    src = (dst - t) @ inv.T
    x, y = src[:, 0], src[:, 1]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    out = np.zeros((size * size, 3))
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - np.abs(x - xi)) * (1 - np.abs(y - yi))
            ok = (xi >= 0) & (xi < image.shape[1]) & (yi >= 0) & (yi < image.shape[0])
            out[ok] += wgt[ok, None] * image[yi[ok], xi[ok]]
    return np.clip(np.round(out.reshape(size, size, 3)), 0, 255)


def test_scrfd_format_decoding_matches_independent_computation(onnx_models):
    folder, _ = onnx_models
    analyzer = FaceAnalyzer([folder])
    assert analyzer.uses_onnx
    image = np.full((480, 800, 3), 230, np.uint8)  # bright, non-square: letterboxed to 640×384
    faces = analyzer.faces(image)
    scale = 640 / 800
    # mean of the normalised, letterboxed input: image part then zero padding
    mean = (640 * 384 * (230 - 127.5) / 128 + 640 * 256 * (-127.5 / 128)) / (640 * 640)
    assert len(faces) == 2  # the stride-16 duplicate is suppressed by NMS
    expected = sorted([expected_detection(s, i, scale) for s, i, _ in (PLANTED[0], PLANTED[2])],
                      key=lambda bk: -(bk[0][2] - bk[0][0]) * (bk[0][3] - bk[0][1]))
    for face, (box, kps) in zip(faces, expected):
        np.testing.assert_allclose(face.box, box, atol=1e-3)
        np.testing.assert_allclose(face.landmarks, kps, atol=1e-3)
        assert face.score == pytest.approx(0.5 + 0.4 * mean, abs=1e-4)


def test_arcface_format_alignment_and_normalisation(onnx_models):
    folder, weights = onnx_models
    analyzer = FaceAnalyzer([folder])
    image = (np.random.default_rng(1).random((480, 800, 3)) * 255).astype(np.uint8)
    image[:] = np.clip(image.astype(int) + 120, 0, 255)  # bright enough for the planted score
    face = analyzer.faces(image)[0]
    from emo_pipeline.face.arcface import ARCFACE_TEMPLATE

    a, t = umeyama(face.landmarks.astype(np.float64), ARCFACE_TEMPLATE)
    aligned = bilinear_warp(image.astype(np.float64), a, t)
    expected = ((aligned - 127.5) / 127.5).mean(axis=(0, 1)) @ weights
    np.testing.assert_allclose(face.embedding, expected, rtol=2e-3, atol=2e-3)
    crop = crop_to_face(torch.from_numpy(image).float() / 255, analyzer)
    assert crop.identity.shape == (512,) and crop.lip_box is not None


def _border_steps(out: torch.Tensor, box) -> float:
    """The largest jump between a pixel just outside the crop and its neighbour just inside, over
    the crop's edges that lie inside the photo."""
    f = out[0]
    x0, y0, x1, y1 = box.x0, box.y0, box.x0 + box.side, box.y0 + box.side
    steps = []
    if x0 > 0:
        steps.append((f[y0:y1, x0] - f[y0:y1, x0 - 1]).abs().max())
    if x1 < f.shape[1]:
        steps.append((f[y0:y1, x1 - 1] - f[y0:y1, x1]).abs().max())
    if y0 > 0:
        steps.append((f[y0, x0:x1] - f[y0 - 1, x0:x1]).abs().max())
    if y1 < f.shape[0]:
        steps.append((f[y1 - 1, x0:x1] - f[y1, x0:x1]).abs().max())
    return float(max(steps))


def test_paste_back_blends_without_a_seam():
    """Across the crop's border the feathered frame changes no more than the photo itself does
    between neighbouring pixels there; beyond the crop it is the photo exactly; deep inside it is
    the generated frame. A hard edge (feather 0) shows the seam."""
    original = photo("astronaut")
    box = square_crop_box(ASTRONAUT_FACE, 512, 512)
    assert box.x0 > 0 and box.y0 > 0  # edges inside the photo
    frames = torch.full((2, box.side, box.side, 3), 0.9)  # a generated square far from the photo's colours
    soft = paste_back(frames, original, box)
    hard = paste_back(frames, original, box, feather=0)
    photo_contrast = _border_steps(original[None], box)
    assert _border_steps(soft, box) <= photo_contrast + 0.02
    assert _border_steps(hard, box) > photo_contrast + 0.2
    inside = torch.zeros(512, 512, dtype=torch.bool)
    inside[box.y0: box.y0 + box.side, box.x0: box.x0 + box.side] = True
    assert torch.equal(soft[:, ~inside], original[~inside].expand(2, -1, -1))
    band = 512 // 16 + 1
    core = soft[:, box.y0 + band: box.y0 + box.side - band, box.x0 + band: box.x0 + box.side - band]
    assert torch.allclose(core, torch.tensor(0.9), atol=1e-6)


def test_colour_match_moves_the_square_to_the_photo_colours():
    original = photo("astronaut")
    box = square_crop_box(ASTRONAUT_FACE, 512, 512)
    frames = torch.rand(2, 64, 64, 3) * 0.2 + 0.75  # bright, low contrast
    out = paste_back(frames, original, box, feather=0, colour_reference=frames[0])
    square = out[0, box.y0: box.y0 + box.side, box.x0: box.x0 + box.side].reshape(-1, 3)
    under = crop_square(original, box).reshape(-1, 3)
    assert torch.allclose(square.mean(0), under.mean(0), atol=0.03)


def test_buffalo_l_detector_is_used_but_not_its_other_arcface(tmp_path):
    """buffalo_l's det_10g.onnx is the same SCRFD network; its w600k_r50 embedding is not Hallo's
    glintr100, so no identity model is taken from it."""
    folder = tmp_path / "models" / "buffalo_l"
    folder.mkdir(parents=True)
    scrfd_model(folder / "det_10g.onnx")
    arcface_model(folder / "w600k_r50.onnx", np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32))
    analyzer = FaceAnalyzer([tmp_path])
    assert analyzer.uses_onnx and analyzer.embedder is None


def test_face_models_notice_is_one_line_from_the_package_logger_once(caplog, tmp_path):
    """Without the face models the analyzer finds faces silently; a caller whose model uses the identity
    embedding asks for the notice: one line naming the command that fetches them, once per analyzer."""
    import logging

    analyzer = FaceAnalyzer([])
    with caplog.at_level(logging.WARNING):
        analyzer.faces(np.zeros((64, 64, 3), dtype=np.uint8))
        assert caplog.records == []
        analyzer.notice_missing_identity("models/emo")
        analyzer.notice_missing_identity("models/emo")
    (record,) = caplog.records
    message = record.getMessage()
    assert record.name.endswith("face.analysis") and "\n" not in message and len(message) < 160
    assert message.endswith("python -m emo_pipeline download face --to models/emo")
    # with the face models there is nothing to say
    folder = tmp_path / "face_analysis" / "models"
    folder.mkdir(parents=True)
    scrfd_model(folder / "scrfd_10g_bnkps.onnx")
    arcface_model(folder / "glintr100.onnx", np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        FaceAnalyzer([tmp_path]).notice_missing_identity("models/emo")
    assert caplog.records == []


def test_cascade_drops_skinless_extra_detections_but_not_faces():
    """scikit-image's astronaut is one person: the cascade's second hit, a patch on the suit, has no
    skin tone and is dropped. Two real faces side by side both stay; a grey photo is not filtered."""
    from emo_pipeline.face.analysis import cascade_faces, skin_fraction

    astronaut = data.astronaut()
    faces = cascade_faces(astronaut)
    assert len(faces) == 1 and skin_fraction(astronaut, faces[0].box) > 0.5
    face = astronaut[40:200, 140:300]
    pair = np.concatenate([face, face], axis=1)  # two faces, one in each half
    centres = [(f.box[0] + f.box[2]) / 2 for f in cascade_faces(pair)]
    assert min(centres) < 160 < max(centres)
    grey = np.repeat(astronaut.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    assert len(cascade_faces(grey)) >= 1  # no skin tone anywhere: nothing is filtered by it
