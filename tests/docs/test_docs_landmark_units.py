"""Keeps the "Landmark units" part of docs/corpus.md true: its table names the importer's units and face-size
ranges, the examples are found in the units it says, and the messages it quotes are what the importer says
for the changes it describes. (Its `import_corpus --landmark-units` line is run by test_docs_corpus_model.)"""
import math
import re
import shutil

import numpy as np
import pytest

from tests.docs.test_docs_corpus_model import CORPUS_DOC, EXAMPLES, table


def _text() -> str:
    return CORPUS_DOC.read_text(encoding="utf-8")


def test_the_units_table_lists_the_importers_units():
    from inference.importers import LANDMARK_UNITS

    rows = table(CORPUS_DOC, "| `landmark_units` |")
    assert [row[0].strip("`") for row in rows] == list(LANDMARK_UNITS)


def test_the_documented_face_size_ranges_are_the_importers():
    from inference.importers import FACE_SIZE_RANGES

    said = re.search(r"its face size must lie in that unit's range above \(([^)]*)\)", " ".join(_text().split()))
    documented = {}
    for part in said.group(1).split(", "):
        if m := re.fullmatch(r"([\d.]+) to ([\d.]+) for `(\w+)`", part):
            documented[m.group(3)] = (float(m.group(1)), float(m.group(2)))
        elif m := re.fullmatch(r"at least ([\d.]+) for `(\w+)`", part):
            documented[m.group(2)] = (float(m.group(1)), math.inf)
        elif m := re.fullmatch(r"at most ([\d.]+) for `(\w+)`", part):
            documented[m.group(2)] = (0.0, float(m.group(1)))
    assert documented == FACE_SIZE_RANGES


def test_the_examples_are_found_in_the_units_the_doc_says(tmp_path):
    from inference.importers import import_corpus

    text = " ".join(_text().split())
    said = re.search(r"The 68-point example is found to be in `(\w+)` and the 468-point example in `(\w+)`", text)
    for folder, unit in zip(("landmarks68_csv", "mediapipe468_npy"), said.groups()):
        result = import_corpus(EXAMPLES / folder, tmp_path / folder)
        assert result.ok, result.report()
        assert {(u.metadata["landmark_units"]) for u in result.utterances} == {unit}, folder


def _divide_csv_points(path, by):
    lines = path.read_text(encoding="utf-8").split("\n")
    header = lines[0].split(",")
    out = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",") if line else []
        out.append(",".join(c if header[i] in ("frame", "timestamp") else f"{float(c) / by:g}"
                            for i, c in enumerate(cells)))
    path.write_text("\n".join(out), encoding="utf-8")


def _to_pixels(path):
    points = np.load(path)
    points[..., 0] *= 1280
    points[..., 1] *= 720
    np.save(path, points)


# change → (example folder, how to change a copy of it, import options)
CHANGES = {
    "divide every point of `landmarks68_csv/ex01.csv` by 10 (centimetres)":
        ("landmarks68_csv", lambda d: _divide_csv_points(d / "ex01.csv", 10), {}),
    "multiply x by 1280 and y by 720 in `mediapipe468_npy/ex02.npy` (pixels)":
        ("mediapipe468_npy", lambda d: _to_pixels(d / "ex02.npy"), {}),
    "import `mediapipe468_npy` with `--landmark-units mm`":
        ("mediapipe468_npy", lambda d: None, {"landmark_units": "mm"}),
}
MESSAGE_ROWS = table(CORPUS_DOC, "| change to an example |")


def test_every_documented_change_has_a_check():
    assert sorted(row[0] for row in MESSAGE_ROWS) == sorted(CHANGES)


@pytest.mark.parametrize("change,message", [(row[0], row[1].strip("`")) for row in MESSAGE_ROWS])
def test_the_documented_messages_are_what_the_importer_says(tmp_path, change, message):
    from inference.importers import import_corpus

    folder, edit, options = CHANGES[change]
    source = tmp_path / folder
    shutil.copytree(EXAMPLES / folder, source)
    edit(source)
    result = import_corpus(source, tmp_path / "out", **options)
    assert not result.ok and not (tmp_path / "out").exists()
    assert message in result.report(), result.report()
