"""The units of landmark files (inference.importers.resolve_landmark_units): millimetres, metres, pixels and
normalised image coordinates are told from the values where they can be, declared where they cannot,
metres become millimetres, and a file or a corpus that mixes units is refused naming the files.

The faces here are the platform's iBUG-68 face (inference/face_geometry.py, mm, centred on the nose) moving a
little, put into each unit the way trackers write it."""
from __future__ import annotations

import numpy as np
import pytest

from inference.face_geometry import neutral_face
from inference.importers import InvalidInput, import_corpus, read_motion
from inference.motion import MotionClip
from tests.inference.test_importers import write_voiced_wav

FPS = 25.0
N = 25  # 1 s at 25 fps, the length of write_voiced_wav's default


def face_mm(n=N) -> np.ndarray:
    """[n, 68, 3] mm: the neutral face with its jaw opening and closing."""
    points = np.repeat(neutral_face()[None], n, axis=0)
    points[:, 48:, 1] -= 3 * np.sin(np.arange(n) / 3.0)[:, None]
    return points


def in_pixels(points_mm, *, centre=(640.0, 360.0), px_per_mm=2.0) -> np.ndarray:
    """Image coordinates (y down) of a face: 2-D, x and y in pixels."""
    x = centre[0] + px_per_mm * points_mm[:, :, 0]
    y = centre[1] - px_per_mm * points_mm[:, :, 1]
    return np.stack([x, y], axis=2)


def in_normalised(points_mm) -> np.ndarray:
    """MediaPipe-like: pixels of a 1280 × 720 image divided by its width and height, z relative and small."""
    px = in_pixels(points_mm)
    return np.stack([px[:, :, 0] / 1280, px[:, :, 1] / 720, points_mm[:, :, 2] / 1280], axis=2)


def write_landmark_csv(path, points: np.ndarray) -> None:
    """Blocked columns x0.., y0.. (and z0.. for 3-D points), no time column."""
    n, p, dims = points.shape
    header = [f"{axis}{i}" for axis in "xyz"[:dims] for i in range(p)]
    rows = [",".join(f"{points[t, int(c[1:]), 'xyz'.index(c[0])]:.6g}" for c in header) for t in range(n)]
    path.write_text(",".join(header) + "\n" + "\n".join(rows) + "\n")


def units_of(tmp_path, points, *, suffix=".npy", **options):
    path = tmp_path / f"face{suffix}"
    if suffix == ".npy":
        np.save(path, points)
    else:
        write_landmark_csv(path, points)
    return read_motion(path, **options)


@pytest.mark.parametrize("name, make, unit, words", [
    ("mm, centred on the face", face_mm, "mm", "mm"),
    ("mm, in a camera's frame", lambda: face_mm() + [120.0, 80.0, 600.0], "mm", "mm"),
    ("metres", lambda: face_mm() / 1000, "mm", "mm (converted from m)"),
    ("pixels", lambda: in_pixels(face_mm()), "px", "px (image pixels, as tracked)"),
    ("normalised", lambda: in_normalised(face_mm()), "normalised", "normalised image coordinates (as tracked)"),
])
@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_the_unit_is_told_from_the_values(tmp_path, name, make, unit, words, suffix):
    points = make()
    motion = units_of(tmp_path, points, suffix=suffix)
    assert motion.metadata["landmark_units"] == unit, name
    assert motion.metadata["units"] == words and motion.metadata["landmark_units_from"] == "values"
    got = motion.values.reshape(N, 68, 3)[:, :, :points.shape[2]]
    expected = points * 1000 if words.endswith("from m)") else points
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, make", [
    ("unit-size shapes around the origin", lambda: face_mm() / 50),
    ("centimetres", lambda: face_mm() / 10),
    ("pixels with a tenth of the points off the image", lambda: in_pixels(face_mm(), centre=(50.0, 360.0))),
])
def test_values_that_fit_no_unit_or_two_are_refused_naming_the_file_and_the_fix(tmp_path, name, make):
    with pytest.raises(InvalidInput) as caught:
        units_of(tmp_path, make())
    message = str(caught.value)
    assert message.startswith("face.npy: the unit of its landmarks cannot be told from the values"), name
    assert "landmark_units" in message and "--landmark-units" in message


def test_a_declared_unit_is_used_and_must_fit_the_face(tmp_path):
    off_image = in_pixels(face_mm(), centre=(50.0, 360.0))  # partly off the image: the values alone are ambiguous
    motion = units_of(tmp_path, off_image, landmark_units="px")
    assert (motion.metadata["landmark_units"], motion.metadata["landmark_units_from"]) == ("px", "declared")
    metres = units_of(tmp_path, face_mm() / 1000, landmark_units="m")
    np.testing.assert_allclose(metres.values.reshape(N, 68, 3), face_mm(), rtol=1e-5)
    with pytest.raises(InvalidInput, match=r"face.npy: its landmarks are declared in mm, but the face then measures "
                                           r"0.05\d* mm .*a face in mm measures 15 to 150"):
        units_of(tmp_path, face_mm() / 1000, landmark_units="mm")
    with pytest.raises(ValueError, match="landmark_units must be one of mm, m, px, normalised, got 'cm'"):
        units_of(tmp_path, face_mm(), landmark_units="cm")


def test_a_file_whose_frames_change_unit_is_refused_naming_the_frames(tmp_path):
    points = in_pixels(face_mm())
    points[10:] = in_normalised(face_mm())[10:, :, :2]
    with pytest.raises(InvalidInput, match=r"face.npy: the face is \d+ times larger in frame \d+ than in frame "
                                           r"\d+ \(counting from 0\): its frames are in different units"):
        units_of(tmp_path, points)


def _utterance(folder, name, points):
    write_voiced_wav(folder / f"{name}.wav")
    np.save(folder / f"{name}.npy", points)


def test_a_corpus_holds_landmarks_in_one_unit(tmp_path):
    src = tmp_path / "src"
    _utterance(src, "a_mm", face_mm())
    _utterance(src, "b_m", face_mm() / 1000)
    _utterance(src, "c_px", in_pixels(face_mm()))
    result = import_corpus(src, tmp_path / "out", fps=FPS)
    assert not result.ok and not (tmp_path / "out").exists()
    assert ("corpus: the landmark files are in different units (mm: 2 (a_mm.npy, b_m.npy); px: 1 (c_px.npy)); "
            "a corpus holds one unit") in result.report()
    # Even skipping bad utterances: the mix is the corpus's problem, not one utterance's.
    assert not import_corpus(src, tmp_path / "out", fps=FPS, allow_partial=True).ok

    (src / "c_px.npy").unlink()
    (src / "c_px.wav").unlink()
    result = import_corpus(src, tmp_path / "out", fps=FPS)
    assert result.ok, result.report()
    assert {u.metadata["landmark_units"] for u in result.utterances} == {"mm"}
    b = MotionClip.load(result.root / "motion" / "b_m.npz")
    assert b.metadata["units"] == "mm (converted from m)"
    np.testing.assert_allclose(b.landmarks(), face_mm(), rtol=1e-5)


def test_metadata_csv_declares_the_unit_per_utterance(tmp_path):
    src = tmp_path / "src"
    _utterance(src, "a", in_pixels(face_mm()))
    _utterance(src, "b", in_pixels(face_mm(), centre=(50.0, 360.0)))  # partly off the image: ambiguous
    (src / "metadata.csv").write_text("utterance,landmark_units\na,\nb,px\n")
    result = import_corpus(src, tmp_path / "out", fps=FPS)
    assert result.ok, result.report()
    assert {u.name: u.metadata["landmark_units"] for u in result.utterances} == {"a": "px", "b": "px"}

    (src / "metadata.csv").write_text("utterance,landmark_units\na,pixels\nb,px\n")
    result = import_corpus(src, tmp_path / "out2", fps=FPS)
    assert "metadata.csv, line 2: landmark_units 'pixels' is not one of mm, m, px, normalised" in result.report()
