"""Real files through PyAV: MP4 with H.264 + AAC, audio and image loading, atomic writes."""

import math
import warnings

import av
import numpy as np
import pytest
import torch
from PIL import Image

from emo_pipeline.io.media import VideoWriter, load_audio, load_image, read_video_info, write_video


def sine(seconds, rate, channels=2, freq=440.0):
    t = torch.arange(int(round(seconds * rate))) / rate
    return torch.stack([0.5 * torch.sin(2 * math.pi * freq * (c + 1) * t) for c in range(channels)])


@pytest.mark.parametrize("width,height", [(64, 48), (63, 47)])
def test_mp4_round_trip_with_audio_and_metadata(tmp_path, width, height):
    frames = torch.rand(30, height, width, 3)
    path = write_video(tmp_path / "clip.mp4", frames, 25, audio=(sine(1.3, 44100), 44100),
                       metadata={"workflow": '{"nodes": []}'})
    info = read_video_info(path)
    assert info["frame_count"] == 30 and info["fps"] == 25
    assert info["audio_duration"] == pytest.approx(1.2, abs=1e-3)  # trimmed to the video
    assert info["metadata"]["workflow"] == '{"nodes": []}'
    assert (info["width"], info["height"]) == (width + width % 2, height + height % 2)


def test_short_audio_is_padded_to_the_video_and_odd_rates_resampled(tmp_path):
    path = write_video(tmp_path / "a.mp4", torch.rand(25, 32, 32, 3), 25, audio=(sine(0.4, 7000, 1), 7000))
    info = read_video_info(path)
    assert info["audio_duration"] == pytest.approx(1.0, abs=1e-3)
    assert info["audio_sample_rate"] == 48000


def test_video_pixels_survive_encoding(tmp_path):
    frames = torch.zeros(5, 32, 32, 3)
    frames[:, :, :16, 0] = 1.0  # left half red
    path = write_video(tmp_path / "v.mp4", frames, 10)
    with av.open(str(path)) as c:
        image = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(float) / 255
    assert image[:, :12, 0].mean() > 0.9 and image[:, 20:, 0].mean() < 0.1


def test_load_audio_from_wav_and_mp4(tmp_path):
    wav = tmp_path / "tone.wav"
    with av.open(str(wav), "w") as c:
        stream = c.add_stream("pcm_s16le", rate=8000, layout="mono")
        data = (sine(0.5, 8000, 1).numpy() * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
        frame.sample_rate = 8000
        c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    waveform, rate = load_audio(wav)
    assert rate == 8000 and waveform.shape == (1, 4000)
    assert torch.allclose(waveform, sine(0.5, 8000, 1), atol=1e-3)
    mp4 = write_video(tmp_path / "m.mp4", torch.rand(10, 16, 16, 3), 10, audio=(sine(1.0, 44100), 44100))
    waveform, rate = load_audio(mp4)
    assert rate == 44100 and waveform.shape == (2, 44100)  # AAC's last-frame padding is trimmed


def test_error_inside_writer_leaves_no_file(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(target, 25, 32, 32, audio=(sine(1, 16000), 16000)) as writer:
            writer.write(torch.rand(4, 32, 32, 3))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_wrong_frame_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"Expected frames \[F, 32, 32, 3\]"):
        with VideoWriter(tmp_path / "x.mp4", 25, 32, 32) as writer:
            writer.write(torch.rand(2, 16, 16, 3))
    assert list(tmp_path.iterdir()) == []


def test_load_image_rgba_and_grey(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[:, :15] = (255, 0, 0, 255)  # opaque red left, transparent right
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.shape == (20, 30, 3) and image.dtype == torch.float32
    assert image[0, 0].tolist() == [1.0, 0.0, 0.0] and image[0, -1].tolist() == [1.0, 1.0, 1.0]
    Image.fromarray(np.full((8, 8), 128, np.uint8), "L").save(tmp_path / "g.png")
    assert torch.allclose(load_image(tmp_path / "g.png"), torch.full((8, 8, 3), 128 / 255))


def test_missing_files():
    with pytest.raises(FileNotFoundError, match="Audio file not found"):
        load_audio("/nope.wav")
    with pytest.raises(FileNotFoundError, match="Image file not found"):
        load_image("/nope.png")


def test_two_writers_of_one_path_do_not_share_a_temporary_file(tmp_path):
    """Each run writes its own temporary file; the path ends up with one run's complete video."""
    from emo_pipeline.io.media import VideoWriter

    out = tmp_path / "same.mp4"
    first = VideoWriter(out, 25, 64, 64)
    second = VideoWriter(out, 25, 64, 64)
    assert first.tmp != second.tmp
    with second:
        second.write(torch.zeros(3, 64, 64, 3))
    with first:
        first.write(torch.zeros(5, 64, 64, 3))
    assert read_video_info(out)["frame_count"] == 5  # the last to finish, complete
    assert [p.name for p in tmp_path.iterdir()] == ["same.mp4"]


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")  # mode I;16
    image = load_image(tmp_path / "deep.png")
    assert image.shape == (64, 64, 3)
    expected = torch.from_numpy(ramp / 65535.0).float()
    assert (image[..., 0] - expected).abs().max() < 1 / 255 + 1e-6  # 8-bit rounding, no clipping at 255/65535


@pytest.mark.parametrize("damage", ["truncated", "zeroed", "text"])
def test_unreadable_images_get_a_plain_error(tmp_path, damage):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "zeroed":
        path.write_bytes(data[:40] + bytes(len(data) - 40))
    else:
        path.write_text("this is not an image")
    with pytest.raises(ValueError, match="Cannot read .*photo.png as an image"):
        load_image(path)


def test_huge_jpeg_is_decoded_at_reduced_size(tmp_path):
    from emo_pipeline.io.media import MAX_IMAGE_SIDE

    Image.new("RGB", (9000, 6000), (200, 120, 90)).save(tmp_path / "huge.jpg", quality=80)
    image = load_image(tmp_path / "huge.jpg")
    assert max(image.shape[:2]) <= MAX_IMAGE_SIDE
    assert abs(image.shape[1] / image.shape[0] - 1.5) < 0.01
    assert abs(float(image[..., 0].mean()) - 200 / 255) < 0.02


def test_truncated_wav_is_read_with_a_warning(tmp_path):
    path = tmp_path / "voice.wav"
    with av.open(str(path), "w") as c:  # a real 1-s 16 kHz WAV
        stream = c.add_stream("pcm_s16le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray((np.sin(np.arange(16000) / 10)[None] * 16000).astype(np.int16),
                                           format="s16", layout="mono")
        frame.sample_rate = 16000
        c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    whole, _ = load_audio(path)
    assert whole.shape[1] == 16000
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header still says 1 s
    with pytest.warns(UserWarning, match=r"only 0\.[45]\d s of audio could be read of the 1\.00 s"):
        half, rate = load_audio(path)
    assert rate == 16000 and 7000 < half.shape[1] < 9000


@pytest.mark.parametrize("frame_count_header", [True, False], ids=["xing", "no-header"])
def test_truncated_mp3_is_read_with_a_warning(tmp_path, frame_count_header):
    """A cut-short MP3 warns whether or not a header gives its length (without one, the file ends inside
    a frame); the whole file and a file cut at a frame boundary do not."""
    path = tmp_path / "song.mp3"
    with av.open(str(path), "w", format="mp3", options={} if frame_count_header else {"write_xing": "0"}) as c:
        stream = c.add_stream("libmp3lame", rate=44100, layout="mono")
        tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(3 * 44100) / 44100)).astype(np.float32)[None]
        for start in range(0, tone.shape[1], 1152):
            frame = av.AudioFrame.from_ndarray(tone[:, start: start + 1152], format="flt", layout="mono")
            frame.sample_rate = 44100
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        whole, rate = load_audio(path)
    assert rate == 44100 and abs(whole.shape[1] / rate - 3.0) < 0.05
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.31)])
    expected = r" of the 3\.0\d s its header declares" if frame_count_header else r" \(the file seems cut short"
    with pytest.warns(UserWarning, match=r"song\.mp3: only 0\.9\d s of audio could be read" + expected):
        cut, _ = load_audio(path)
    assert abs(cut.shape[1] / rate - 0.93) < 0.03
    if not frame_count_header:  # cut exactly between two frames: nothing is amiss to be seen, no warning
        path.write_bytes(data)
        with av.open(str(path)) as c:
            boundary = [p.pos for p in c.demux(c.streams.audio[0]) if p.size][40]
        path.write_bytes(data[:boundary])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_audio(path)


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header says width×height (its IHDR checksum made to match)."""
    import io
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR's width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_a_decompression_bomb_is_refused_plainly_and_a_big_photo_is_taken(tmp_path, capsys):
    from emo_pipeline.cli import main

    (tmp_path / "bomb.png").write_bytes(png_claiming(30000, 30000))
    with pytest.raises(ValueError, match=r"bomb.png says it is 900 megapixels.*decompression bomb"):
        load_image(tmp_path / "bomb.png")
    assert main(["generate", "--random", "--image", str(tmp_path / "bomb.png"), "--out", str(tmp_path / "o.mp4")]) == 2
    assert "decompression bomb" in capsys.readouterr().err and not (tmp_path / "o.mp4").exists()
    Image.new("RGB", (10000, 8000), (90, 140, 200)).save(tmp_path / "photo.jpg", quality=85)  # an 80 MP photo
    image = load_image(tmp_path / "photo.jpg")
    assert image.shape[1] / image.shape[0] == pytest.approx(1.25, abs=0.01)
    assert float(image[..., 2].mean()) == pytest.approx(200 / 255, abs=0.02)


def test_a_png_failing_its_checksums_is_refused(tmp_path):
    from skimage import data as samples

    good = tmp_path / "good.png"
    Image.fromarray(samples.astronaut()).save(good)
    original = good.read_bytes()
    # 200 zeroed bytes where Pillow still decodes the file, wrongly and without a word
    for back in range(300, 20000, 50):
        damaged = bytearray(original)
        damaged[-back:-back + 200] = bytes(200)
        try:
            with Image.open(__import__("io").BytesIO(bytes(damaged))) as img:
                decoded = np.asarray(img.convert("RGB"))
            break
        except OSError:
            continue
    else:
        pytest.fail("no place where Pillow decodes the damaged PNG silently")
    assert (decoded != samples.astronaut()).any()
    (tmp_path / "photo.png").write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"photo.png is damaged \(.*checksum.*IDAT.*\): its data no longer matches"):
        load_image(tmp_path / "photo.png")
    assert load_image(good).shape == (512, 512, 3)  # the whole file is taken


def test_a_jpeg_with_damaged_data_is_used_with_a_warning(tmp_path):
    import warnings as warning_module

    from skimage import data as samples

    # JPEG has no checksum: damage is found where a decoder trips on it (FFmpeg's, here at the middle; not
    # every damage trips one)
    Image.fromarray(samples.astronaut()).save(tmp_path / "good.jpg")
    Image.fromarray(samples.astronaut()).save(tmp_path / "progressive.jpg", quality=90, progressive=True)
    original = (tmp_path / "good.jpg").read_bytes()
    damaged = bytearray(original)
    middle = len(damaged) // 2
    damaged[middle:middle + 200] = bytes(200)
    (tmp_path / "photo.jpg").write_bytes(bytes(damaged))
    with pytest.warns(UserWarning, match="photo.jpg: the JPEG decoder found damaged data in it: parts of the picture"):
        image = load_image(tmp_path / "photo.jpg")
    clean = load_image(tmp_path / "good.jpg")
    assert (image - clean).abs().amax(-1).gt(0.1).float().mean() > 0.1  # indeed wrong, as the warning says
    with warning_module.catch_warnings():
        warning_module.simplefilter("error")  # whole files: no warning
        load_image(tmp_path / "good.jpg"), load_image(tmp_path / "progressive.jpg")


def test_a_header_over_the_limit_but_under_pillows_is_refused_by_its_size(tmp_path):
    (tmp_path / "tall.png").write_bytes(png_claiming(12000, 12000))  # 144 MP: over ours, under Pillow's 179
    with pytest.raises(ValueError, match=r"tall.png says it is 12000×12000 pixels \(144 megapixels\)"):
        load_image(tmp_path / "tall.png")


def write_float_wav(path, samples: np.ndarray, rate: int = 16000):
    with av.open(str(path), "w") as c:
        stream = c.add_stream("pcm_f32le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.astype(np.float32).reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    return path


def test_samples_far_outside_one_are_scaled_with_a_warning_and_not_numbers_refused(tmp_path):
    wave = np.sin(2 * np.pi * 220 * np.arange(8000) / 16000)
    with pytest.warns(UserWarning, match=r"loud.wav: its samples reach 1e\+30, far outside -1..1.*scaled down"):
        waveform, rate = load_audio(write_float_wav(tmp_path / "loud.wav", wave * 1e30))
    assert rate == 16000 and float(waveform.abs().max()) == pytest.approx(1.0, abs=1e-3)
    assert np.corrcoef(waveform[0].numpy(), wave)[0, 1] > 0.999  # the same sound, not a clipped square wave
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a mix a little over full scale is kept as it is
        assert float(load_audio(write_float_wav(tmp_path / "hot.wav", wave * 1.2))[0].abs().max()) > 1.19
    broken = wave.copy()
    broken[100] = np.nan
    with pytest.raises(ValueError, match="nan.wav holds samples that are not numbers"):
        load_audio(write_float_wav(tmp_path / "nan.wav", broken))
