"""The Python package against the CLI and against bad input."""

import subprocess

import numpy as np
import pytest
from PIL import Image

import tipedge
from conftest import cli, run_cli


@pytest.fixture(scope="module")
def session(model, pack):
    return tipedge.Session(model, pack=pack, top_k=3)


def test_parity_with_tipedge_classify_on_the_textile_photos(model, pack, query_images):
    """Every bundled query photo: the same top-3 classes and probabilities as the CLI, fed as
    JPEG bytes (the CLI's decoder) and as a Pillow-decoded RGB array."""
    records = [r for r in run_cli("classify", "-m", str(model), "--pack", str(pack),
                                  "--top-k", "3", *map(str, query_images))
               if r.get("type") == "prediction"]
    by_path = {r["path"]: r for r in records}
    assert len(by_path) == len(query_images) == 48
    s = tipedge.Session(model, pack=pack, top_k=3)
    for path in query_images:
        want = by_path[str(path)]
        from_jpeg = s.classify(path.read_bytes(), format="jpeg").to_dict()
        rgb = np.asarray(Image.open(path).convert("RGB"))
        from_rgb = s.classify(rgb, format="rgb24").to_dict()
        for got in (from_jpeg, from_rgb):
            assert [t["label"] for t in got["top"]] == [t["label"] for t in want["top"]], path
            for g, w in zip(got["top"], want["top"]):
                assert g["class"] == w["class"]
                assert g["prob"] == pytest.approx(w["prob"], abs=1e-5), path
    assert s.frames == 2 * len(query_images)


def test_a_camera_loop_over_numpy_frames(session, query_images):
    """picamera2/OpenCV-shaped: BGR frames, crops of a larger buffer (strided rows), YUV420
    as (h*3/2, w), a batch; one prediction per frame, frame indices counting up."""
    rgb = np.asarray(Image.open(query_images[0]).convert("RGB"))
    h, w = rgb.shape[0] // 4 * 4, rgb.shape[1] // 4 * 4
    rgb = np.ascontiguousarray(rgb[:h, :w])
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    start = session.frames
    want = session.classify(rgb).label
    assert session.classify(bgr, format="bgr24").label == want
    # A crop of a wider frame: rows `stride` bytes apart, read in place.
    canvas = np.zeros((h + 20, w + 64, 3), np.uint8)
    canvas[10:10 + h, 32:32 + w] = rgb
    crop = canvas[10:10 + h, 32:32 + w]
    assert not crop.flags["C_CONTIGUOUS"]
    a, b = session.classify(crop), session.classify(rgb)
    assert a.label == b.label and a.prob == pytest.approx(b.prob, abs=1e-6)
    # YUV 4:2:0 from the same pixels, as picamera2's "YUV420" and OpenCV's COLOR_RGB2YUV_I420.
    y = (0.257 * rgb[..., 0] + 0.504 * rgb[..., 1] + 0.098 * rgb[..., 2] + 16).astype(np.uint8)
    u = np.full((h // 2, w // 2), 128, np.uint8)
    i420 = np.concatenate([y, u.reshape(h // 4, w), u.reshape(h // 4, w)])
    assert i420.shape == (h * 3 // 2, w)
    p = session.classify(i420, format="yuv420p")
    assert p.label in session.class_names
    p = session.classify(i420.ravel(), format="yuv420p", width=w, height=h)
    assert p.label in session.class_names
    frames = [rgb, bgr[:, :, ::-1].copy(), crop]
    batch = session.classify_batch(frames)
    assert [q.label for q in batch] == [want] * 3
    assert [q.frame for q in batch] == [start + 6 + i for i in range(3)]
    assert session.frames == start + 9
    feature = session.embed(rgb)
    assert feature.dtype == np.float32 and feature.shape == (session.dim,)
    assert np.linalg.norm(feature) == pytest.approx(1.0, abs=1e-4)


def test_bad_arrays_are_clear_value_errors_and_the_session_goes_on(session):
    ok = np.zeros((64, 64, 3), np.uint8)
    cases = [
        (np.zeros((64, 64, 3), np.float32), "rgb24", "dtype float32, expected uint8"),
        (np.zeros((64, 64), np.uint8), "rgb24", "does not fit rgb24"),
        (np.zeros((64, 64, 4), np.uint8), "rgb24", "does not fit rgb24"),
        (ok[:, ::2], "rgb24", "must be contiguous"),
        (ok[:, :, ::-1], "rgb24", "must be contiguous"),
        (ok[::-1], "rgb24", "smaller than a row"),
        (np.zeros((64, 63), np.uint8), "nv12", "does not fit nv12"),
        (np.zeros(100, np.uint8), "nv12", "needs width= and height="),
        (np.zeros((0, 64, 3), np.uint8), "rgb24", "empty array"),
        ([[1, 2, 3]], "rgb24", "expected a numpy.ndarray of uint8"),
        (np.zeros((8, 8), np.uint8), "jpeg", "a JPEG frame is 1-D"),
    ]
    for frame, fmt, message in cases:
        before = session.frames
        with pytest.raises(ValueError, match=message) as e:
            session.classify(frame, format=fmt)
        assert "\n" not in str(e.value)
        assert str(e.value).startswith(f"frame {before}: ")
        assert session.frames == before + 1
    with pytest.raises(ValueError, match="unknown pixel format"):
        session.classify(ok, format="rgb48")
    # A buffer shorter than the frame it claims to be.
    with pytest.raises(ValueError, match="frame"):
        session.classify(np.zeros(100, np.uint8), format="nv12", width=64, height=64)
    # A corrupt JPEG: the library's FrameError (a ValueError), one line.
    with pytest.raises(tipedge.FrameError, match="frame"):
        session.classify(b"\xff\xd8\xff\xe0 not a jpeg", format="jpeg")
    assert session.classify(ok).label in session.class_names
    # A batch reports its bad frame in place and classifies the others.
    out = session.classify_batch([ok, np.zeros((4, 4), np.float32), ok])
    assert isinstance(out[0], tipedge.Prediction) and isinstance(out[2], tipedge.Prediction)
    assert isinstance(out[1], tipedge.FrameError) and "float32" in str(out[1])


def test_open_errors_and_swap(model, pack, pack2, tmp_path):
    with pytest.raises(tipedge.OpenError, match="missing.pack"):
        tipedge.Session(model, pack=tmp_path / "missing.pack")
    # A path that is not UTF-8 (os.fsdecode's surrogates) is still a path: opened, or named.
    import os

    with pytest.raises(tipedge.OpenError, match="cannot open"):
        tipedge.Session(model, pack=os.fsdecode(bytes(tmp_path) + b"/\xff\xfe.pack"))
    with pytest.raises(TypeError):
        tipedge.Session(model, pack=42)
    with pytest.raises(ValueError, match="exactly one of"):
        tipedge.Session(model)
    with pytest.raises(ValueError, match="top-k"):
        tipedge.Session(model, pack=pack, top_k=0)
    corrupt = tmp_path / "corrupt.pack"
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    s = tipedge.Session(model, pack=pack)
    frame = np.zeros((64, 64, 3), np.uint8)
    before = s.classify(frame).to_dict()["top"]
    with pytest.raises(tipedge.OpenError, match="corrupt.pack"):
        s.swap_pack(corrupt)
    assert s.classify(frame).to_dict()["top"] == before  # kept its pack
    s.swap_pack(pack2)
    after = s.classify(frame).to_dict()["top"]
    assert after != before
    assert s.class_names == ["global defect", "local defect", "nominal"]


def test_the_gil_is_released_while_classifying(model, pack):
    """A Python thread keeps running during one long call (a batch of 8 frames)."""
    import threading
    import time

    frame = np.zeros((240, 320, 3), np.uint8)
    s = tipedge.Session(model, pack=pack)
    s.classify(frame)
    ticks = []
    done = threading.Event()

    def count():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=count)
    t.start()
    start = time.perf_counter()
    out = s.classify_batch([frame] * 8)
    end = time.perf_counter()
    assert len(out) == 8
    done.set()
    t.join()
    # Had the call held the GIL throughout, the counter could not have ticked inside it.
    inside = [x for x in ticks if start < x < end]
    assert len(inside) >= 3, (len(inside), end - start)


def test_one_session_shared_by_two_python_threads(model, pack):
    """Calls from two threads on one session wait for each other (no deadlock with the GIL)
    and every frame gets its own index."""
    import threading

    s = tipedge.Session(model, pack=pack)
    frame = np.zeros((120, 160, 3), np.uint8)
    got = []

    def work():
        for _ in range(6):
            got.append(s.classify(frame).frame)
            s.class_names  # a getter between calls takes the same lock

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "deadlocked"
    assert sorted(got) == list(range(12))


def test_a_session_on_a_device_state_directory(model, pack, tmp_path):
    """state_dir= opens the flashed (active) pack; predictions carry its slot label, as
    `tipedge stream --state` prints them."""
    state = tmp_path / "state"
    with pytest.raises(tipedge.OpenError):
        tipedge.Session(model, state_dir=state)
    run_cli("flash", "--state", str(state), "--model", str(model), str(pack))
    s = tipedge.Session(model, state_dir=state)
    p = s.classify(np.zeros((64, 64, 3), np.uint8))
    assert p.pack is not None and p.pack.startswith("a:"), p.pack
    assert p.to_dict()["pack"] == p.pack


def test_load_warnings_name_a_damaged_compiled_form(model, pack, tmp_path):
    assert tipedge.Session(model, pack=pack).warnings == []
    copy = tmp_path / "model"
    copy.mkdir()
    for f in model.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    subprocess.run([str(cli()), "compile", str(copy)], check=True, capture_output=True, timeout=600)
    tar = copy / "image.b1-f32.nnef.tar"
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 1
    tar.write_bytes(bytes(data))
    s = tipedge.Session(copy, pack=pack)
    assert len(s.warnings) == 1, s.warnings
    assert "image.b1-f32.nnef.tar" in s.warnings[0]
    assert "loaded the ONNX graph instead" in s.warnings[0]
    assert s.classify(np.zeros((64, 64, 3), np.uint8)).label in s.class_names
