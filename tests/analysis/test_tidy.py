"""tidy: every supported file becomes the same tidy frame (one row per rating), bad files are refused with a
message that says what to fix, and rows a design cannot use are removed and reported, never silently.

The webMUSHRA fixtures follow the header written by webMUSHRA's service/write.php
(github.com/audiolabs/webMUSHRA): `session_test_id, <questionnaire fields>, [session_uuid,] trial_id,
rating_stimulus, rating_score, rating_time, rating_comment`. The HEMVIP fixtures are HEMVIP's session JSON
(github.com/jonepatr/hemvip: pages of type `video` and `videopc`, attention stimulus "at") flattened to
that shape, as documented in studies/analysis/tidy.py.
"""
import csv
import hashlib
import math

import numpy as np
import pandas as pd
import pytest

from studies.analysis import tidy
from studies.analysis.errors import AnalysisError


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def platform_rows():
    """A small platform export: two participants, a 5-point likert page with one attention check and one
    catch trial, a pairwise page, and a training trial."""
    base = {c: "" for c in tidy.PLATFORM_COLUMNS}
    rows = []
    for p, answers in (("9b1c-p1", [4, 2, 5, 3]), ("77aa-p2", [3, 3, 4, 1])):
        common = {**base, "participant": p, "source": "prolific", "status": "completed", "excluded": 0,
                  "cell": 0, "question": "naturalness", "question_type": "likert", "item": "overall", "slot": 0,
                  "embodiment": "avatar", "speaker": "spk1", "role": "test", "scale_min": 1, "scale_max": 5,
                  "answer_ms": 2400, "watched_fraction": 1.0, "seeks": 0, "pauses": 0, "replays": 0,
                  "hidden_ms": 0, "playback_errors": 0}
        rows.append({**common, "trial_position": 0, "trial_kind": "training", "condition": "ground_truth",
                     "utterance": "utt00", "stimulus": "tokT", "value": 5})
        for pos, (cond, utt, value) in enumerate(zip(["ground_truth", "still", "lipsync_catch", "random_alignment"],
                                                     ["utt01", "utt02", "utt03", "utt04"], answers), start=1):
            rows.append({**common, "trial_position": pos, "trial_kind": "rated", "condition": cond, "utterance": utt,
                         "stimulus": f"tok{pos}", "value": value,
                         "check": "catch" if cond == "lipsync_catch" else ""})
        rows.append({**common, "trial_position": 5, "trial_kind": "attention", "condition": "attention_check",
                     "utterance": "utt05", "stimulus": "tokA", "value": 4 if p == "9b1c-p1" else 2,
                     "check": "attention", "expected": 4})
        rows.append({**common, "trial_position": 6, "trial_kind": "rated", "question": "preference",
                     "question_type": "pairwise", "scale_min": "", "scale_max": "", "pair_a": "ground_truth",
                     "pair_b": "still", "choice": "A", "value": -1.0, "condition": "ground_truth",
                     "utterance": "utt06", "stimulus": "tokP"})
    return rows


def write_platform(tmp_path, rows=None, columns=None):
    columns = columns or tidy.PLATFORM_COLUMNS
    path = tmp_path / "responses.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows or platform_rows())
    return path


WEBMUSHRA = """session_test_id,email,age,session_uuid,trial_id,rating_stimulus,rating_score,rating_time,rating_comment
face_mushra,ana@example.org,31,4f0c2d7e,trial1,reference,100,45210,
face_mushra,ana@example.org,31,4f0c2d7e,trial1,C1,72,45210,
face_mushra,ana@example.org,31,4f0c2d7e,trial1,C2,35,45210,
face_mushra,ana@example.org,31,4f0c2d7e,trial1,anchor35,12,45210,
face_mushra,ana@example.org,31,4f0c2d7e,trial1,anchor70,40,45210,"too fast"
face_mushra,ana@example.org,31,4f0c2d7e,trial2,reference,95,38002,
face_mushra,ana@example.org,31,4f0c2d7e,trial2,C1,80,38002,
face_mushra,ana@example.org,31,4f0c2d7e,trial2,C2,28,38002,
face_mushra,ana@example.org,31,4f0c2d7e,trial2,anchor35,5,38002,
face_mushra,ana@example.org,31,4f0c2d7e,trial2,anchor70,33,38002,
face_mushra,bo@example.org,45,a81b99c3,trial2,reference,88,51000,
face_mushra,bo@example.org,45,a81b99c3,trial2,C1,60,51000,
face_mushra,bo@example.org,45,a81b99c3,trial2,C2,61,51000,
face_mushra,bo@example.org,45,a81b99c3,trial2,anchor35,20,51000,
face_mushra,bo@example.org,45,a81b99c3,trial2,anchor70,50,51000,
face_mushra,bo@example.org,45,a81b99c3,trial1,reference,100,40400,
face_mushra,bo@example.org,45,a81b99c3,trial1,C1,70,40400,
face_mushra,bo@example.org,45,a81b99c3,trial1,C2,30,40400,
face_mushra,bo@example.org,45,a81b99c3,trial1,anchor35,10,40400,
face_mushra,bo@example.org,45,a81b99c3,trial1,anchor70,45,40400,
"""


# --- the platform's own export ---------------------------------------------------------------------------


def test_platform_header_is_the_exports_header():
    from studies.selectors import EXPORT_COLUMNS

    assert tidy.PLATFORM_COLUMNS == EXPORT_COLUMNS


def test_platform_export_is_detected_and_read_with_its_checks(tmp_path):
    path = write_platform(tmp_path)
    assert tidy.detect_format(path) == "platform"
    frame, fmt = tidy.load_csv(path)
    assert fmt == "platform" and frame.attrs["format"] == "platform"
    assert list(frame.columns[: len(tidy.COLUMNS)]) == tidy.COLUMNS
    assert {"source", "slot", "speaker"} <= set(frame.columns)  # extra columns ride along
    assert len(frame) == 14
    p1 = frame[frame["participant"] == "9b1c-p1"].set_index("trial_position")
    assert p1.loc[5, "check"] == "attention" and p1.loc[5, "expected"] == 4.0
    assert p1.loc[3, "check"] == "catch" and p1.loc[3, "condition"] == "lipsync_catch"
    assert p1.loc[0, "trial_kind"] == "training"
    assert p1.loc[6, "question_type"] == "pairwise" and p1.loc[6, "choice"] == "A"
    assert p1.loc[1, "scale_min"] == 1.0 and p1.loc[1, "scale_max"] == 5.0
    assert frame["value"].dtype == float and frame["trial_position"].dtype == np.int64
    assert frame["excluded"].tolist() == [0] * 14


def test_platform_rating_design_drops_pairwise_answers_and_says_so(tmp_path):
    frame, _ = tidy.load_csv(write_platform(tmp_path))
    within = tidy.normalise(frame, design="within")
    assert len(within) == 12 and not within["question_type"].eq("pairwise").any()
    assert within.attrs["dropped"] == [
        {"reason": "pairwise answers (question preference) are not part of a within analysis", "rows": 2}]
    pairwise = tidy.normalise(frame, design="pairwise")
    # Likert answers go (rated and training); checks stay (attention checks are shown with a likert question).
    assert pairwise["check"].tolist() == ["catch", "attention", "", "catch", "attention", ""]
    assert pairwise.attrs["dropped"] == [
        {"reason": "rating answers (question naturalness) are not part of a pairwise analysis", "rows": 8}]


def test_older_platform_export_without_check_columns_still_reads(tmp_path):
    old = [c for c in tidy.PLATFORM_COLUMNS if c not in ("check", "expected", "scale_min", "scale_max")]
    frame, fmt = tidy.load_csv(write_platform(tmp_path, columns=old))
    assert fmt == "platform"
    attention = frame[frame["trial_kind"] == "attention"]
    assert attention["check"].eq("attention").all() and attention["expected"].isna().all()
    # No scale in the file: likert 1..highest value given to that question (5 here).
    likert = frame[frame["question_type"] == "likert"]
    assert likert["scale_min"].eq(1).all() and likert["scale_max"].eq(5).all()


# --- tidy CSVs ----------------------------------------------------------------------------------------------


def test_minimal_tidy_csv_gets_every_default(tmp_path):
    path = write(tmp_path, "ratings.csv", "participant,condition,value\np1,A,3\np1,B,4\np2,A,2\np2,B,5\np3,A,7\n")
    assert tidy.detect_format(path) == "tidy"
    frame, fmt = tidy.load_csv(path)
    assert fmt == "tidy"
    first = frame.iloc[0]
    assert (first["question"], first["question_type"], first["item"], first["trial_kind"], first["role"],
            first["check"], first["embodiment"]) == ("rating", "likert", "", "rated", "test", "", "")
    assert math.isnan(first["expected"]) and math.isnan(first["answer_ms"])
    assert frame["scale_min"].eq(1).all() and frame["scale_max"].eq(7).all()
    assert frame["trial_position"].tolist() == [1, 2, 1, 2, 1]  # order of each participant's rows


def test_values_that_are_not_whole_numbers_make_a_slider(tmp_path):
    path = write(tmp_path, "s.csv", "participant,condition,value\np1,A,37.5\np1,B,80\n")
    frame, _ = tidy.load_csv(path)
    assert frame["question_type"].eq("slider").all()
    assert frame["scale_min"].eq(0).all() and frame["scale_max"].eq(100).all()


def test_tidy_pairwise_csv_with_lower_case_choices(tmp_path):
    path = write(tmp_path, "ab.csv", "participant,pair_a,pair_b,choice\np1,GT,SYS,a\np1,SYS,GT,B\np2,GT,SYS,tie\n"
                 "p2,GT,SYS,maybe\n")
    frame, fmt = tidy.load_csv(path)
    assert fmt == "tidy"
    out = tidy.normalise(frame, design="pairwise")
    assert out["choice"].tolist() == ["A", "B", "tie"]
    assert out["question_type"].eq("pairwise").all()
    assert out.attrs["dropped"] == [{"reason": "choice is not A, B or tie", "rows": 1}]


def test_semicolon_csv_with_byte_order_mark(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffparticipant;condition;value\r\np1;A;3\r\np1;B;NA\r\n".encode("utf-8"))
    frame, _ = tidy.load_csv(path)
    assert list(frame["participant"]) == ["p1", "p1"]
    out = tidy.normalise(frame, design="within")
    assert len(out) == 1 and out.attrs["dropped"] == [{"reason": "no rating value (empty or NA)", "rows": 1}]


def test_rows_without_value_or_participant_are_removed_and_reported():
    df = pd.DataFrame({"participant": ["p1", "p1", "p2", "", "p3"], "condition": ["A", "B", "A", "B", ""],
                       "value": [3, None, 4, 5, 2]})
    out = tidy.normalise(df, design="between")
    assert out["participant"].tolist() == ["p1", "p2"]
    assert out.attrs["dropped"] == [
        {"reason": "no participant id", "rows": 1},
        {"reason": "no rating value (empty or NA)", "rows": 1},
        {"reason": "rated row without a condition", "rows": 1},
    ]
    again = tidy.normalise(out, design="between")  # idempotent: nothing new dropped, nothing reported twice
    assert again.attrs["dropped"] == out.attrs["dropped"]
    pd.testing.assert_frame_equal(again, out)


def test_normalise_coerces_types_of_a_hand_made_frame():
    df = pd.DataFrame({"participant": [1, 2], "condition": ["A", "B"], "value": ["3", " 4 "],
                       "trial_kind": ["Rated", "ATTENTION"], "expected": [None, 4], "excluded": ["true", "0"]})
    out = tidy.normalise(df, design="within")
    assert out["participant"].tolist() == ["1", "2"]
    assert out["value"].tolist() == [3.0, 4.0]
    assert out["trial_kind"].tolist() == ["rated", "attention"]
    assert out["check"].tolist() == ["", "attention"]
    assert out["excluded"].tolist() == [1, 0]


# --- webMUSHRA and HEMVIP -----------------------------------------------------------------------------------


def test_webmushra_results_become_tidy_rows(tmp_path):
    path = write(tmp_path, "mushra.csv", WEBMUSHRA)
    assert tidy.detect_format(path) == "webmushra"
    frame, fmt = tidy.load_csv(path)
    assert fmt == "webmushra" and len(frame) == 20
    assert sorted(frame["participant"].unique()) == ["4f0c2d7e", "a81b99c3"]
    roles = frame.drop_duplicates("condition").set_index("condition")["role"].to_dict()
    assert roles == {"reference": "hidden_reference", "C1": "test", "C2": "test", "anchor35": "anchor",
                     "anchor70": "anchor"}
    row = frame[(frame["participant"] == "a81b99c3") & (frame["condition"] == "C2") & (frame["utterance"] == "trial2")]
    assert row["value"].item() == 61.0 and row["answer_ms"].item() == 51000.0
    assert row["stimulus"].item() == "trial2/C2" and row["question"].item() == "mushra"
    assert (row["question_type"].item(), row["scale_min"].item(), row["scale_max"].item()) == ("slider", 0, 100)
    assert row["trial_position"].item() == 1  # bo saw trial2 first
    assert row["age"].item() == "45" and "email" not in frame  # questionnaire answers ride along, addresses not
    out = tidy.normalise(frame, design="mushra")
    assert len(out) == 20 and out.attrs["dropped"] == []


def test_old_webmushra_without_session_ids_is_split_by_session_blocks(tmp_path):
    lines = WEBMUSHRA.splitlines()
    header = "session_test_id,age,trial_id,rating_stimulus,rating_score,rating_time,rating_comment"
    body = []
    for line in lines[1:]:
        cells = next(csv.reader([line]))
        body.append(",".join([cells[0], cells[2]] + [f'"{c}"' if " " in c else c for c in cells[4:]]))
    path = write(tmp_path, "mushra.csv", "\n".join([header] + body) + "\n")
    frame, fmt = tidy.load_csv(path)
    assert fmt == "webmushra"
    assert frame.groupby("participant").size().to_dict() == {"face_mushra:session1": 10, "face_mushra:session2": 10}
    assert frame.loc[frame["participant"] == "face_mushra:session2", "age"].eq("45").all()


def test_participant_from_an_email_field_is_a_pseudonym(tmp_path):
    text = "\n".join(",".join(c for i, c in enumerate(next(csv.reader([line]))) if i != 3)
                     for line in WEBMUSHRA.splitlines()) + "\n"  # no session_uuid column
    frame, _ = tidy.load_csv(write(tmp_path, "mushra.csv", text))
    expected = {"email-" + hashlib.sha256(b"ana@example.org").hexdigest()[:12],
                "email-" + hashlib.sha256(b"bo@example.org").hexdigest()[:12]}
    assert set(frame["participant"]) == expected
    assert not frame.isin(["ana@example.org", "bo@example.org"]).any().any()


def test_webmushra_paired_comparison_file_is_refused_with_the_reason(tmp_path):
    path = write(tmp_path, "paired_comparison.csv",
                 "session_test_id,email,trial_id,choice_reference,choice_non_reference,choice_answer,choice_time,"
                 "choice_comment\nab_test,a@x.org,pc1,reference,C1,correct,5120,\n")
    assert tidy.detect_format(path) == "webmushra"
    with pytest.raises(AnalysisError, match="not which of two systems they preferred"):
        tidy.load_csv(path)


HEMVIP = """session_test_id,userId,trial_id,trial_type,rating_stimulus,rating_score,rating_time
genea2020,5f3c11aa,subject_72,video,C1,64,30125
genea2020,5f3c11aa,subject_72,video,C2,41,30125
genea2020,5f3c11aa,subject_72,video,C1,55,28100
genea2020,5f3c11aa,subject_72,video,C2,47,28100
genea2020,5f3c11aa,subject_72,video,at,63,31000
genea2020,5f3c11aa,subject_72,video,at,20,31000
genea2020,5f3c11aa,subject_72,videopc,C1,true,12000
genea2020,5f3c11aa,subject_72,videopc,C2,false,12000
genea2020,5f3c11aa,subject_72,videopc,C2,false,9000
genea2020,5f3c11aa,subject_72,videopc,C1,false,9000
genea2020,5f3c11aa,subject_72,videopc,C1_attn_check_7,99,8000
genea2020,5f3c11aa,subject_72,videopc,C2,false,8000
"""


def test_hemvip_pages_ratings_pairs_and_attention_checks(tmp_path):
    path = write(tmp_path, "hemvip.csv", HEMVIP)
    assert tidy.detect_format(path) == "hemvip"
    frame, fmt = tidy.load_csv(path)
    assert fmt == "hemvip"
    assert frame["participant"].eq("5f3c11aa").all()
    ratings = frame[frame["question"] == "video"]
    # One page id for all pages: pages are told apart by their time, materials are "<id>#<page>".
    assert ratings["trial_position"].tolist() == [1, 1, 2, 2, 3, 3]
    assert ratings["utterance"].tolist()[:3] == ["subject_72#1", "subject_72#1", "subject_72#2"]
    assert ratings["value"].tolist() == [64, 41, 55, 47, 63, 20]
    at = ratings[ratings["condition"] == "at"]
    assert at["check"].eq("attention").all() and at["trial_kind"].eq("attention").all()
    assert at["expected"].isna().all()  # HEMVIP keeps the number asked for in the page config
    pairs = frame[frame["question_type"] == "pairwise"].reset_index(drop=True)
    assert pairs[["pair_a", "pair_b", "choice"]].values.tolist() == [
        ["C1", "C2", "A"], ["C2", "C1", "tie"], ["C1_attn_check_7", "C2", ""]]
    assert pairs["condition"].tolist() == ["C1", "", ""]
    assert pairs.loc[2, "check"] == "attention" and pairs.loc[2, "value"] == 99 and pairs.loc[2, "expected"] == 99
    within = tidy.normalise(frame, design="within")
    assert len(within) == 6
    assert within.attrs["dropped"] == [
        {"reason": "pairwise answers (question videopc) are not part of a within analysis", "rows": 3}]


def test_hemvip_without_page_types_and_with_expected_answers(tmp_path):
    lines = HEMVIP.splitlines()
    header = "session_test_id,userId,trial_id,rating_stimulus,rating_score,rating_time,expected"
    body = []
    for line in lines[1:]:
        cells = line.split(",")
        body.append(",".join(cells[:3] + cells[4:] + ["63" if cells[4] == "at" else ""]))
    frame, fmt = tidy.load_csv(write(tmp_path, "h.csv", "\n".join([header] + body) + "\n"))
    assert fmt == "hemvip"
    # The attention pair's page (scores 99 and false) is recognised as pairwise from its "false".
    assert frame["question_type"].tolist().count("pairwise") == 3
    at = frame[frame["condition"] == "at"]
    assert at["expected"].tolist() == [63.0, 63.0] and at["value"].tolist() == [63.0, 20.0]


def test_hemvip_can_be_asked_for_on_a_webmushra_shaped_file(tmp_path):
    path = write(tmp_path, "mushra.csv", WEBMUSHRA)
    frame, fmt = tidy.load_csv(path, fmt="hemvip")
    assert fmt == "hemvip" and frame.attrs["format"] == "hemvip" and len(frame) == 20


def test_hemvip_pairwise_page_needs_two_rows(tmp_path):
    text = HEMVIP.rsplit("\n", 2)[0] + "\n"  # drop the last row: the attention pair is left with one side
    with pytest.raises(AnalysisError, match="has 1 rows; a HEMVIP videopc page has exactly two"):
        tidy.load_csv(write(tmp_path, "h.csv", text))


# --- bad input -----------------------------------------------------------------------------------------------


def test_missing_and_empty_and_binary_files_are_refused(tmp_path):
    with pytest.raises(AnalysisError, match="no file at"):
        tidy.load_csv(tmp_path / "nope.csv")
    with pytest.raises(AnalysisError, match="is empty"):
        tidy.load_csv(write(tmp_path, "empty.csv", "\n \n"))
    with pytest.raises(AnalysisError, match="header but no data rows"):
        tidy.load_csv(write(tmp_path, "header.csv", "participant,condition,value\n"))
    xlsx = tmp_path / "results.xlsx"
    xlsx.write_bytes(b"PK\x03\x04" + bytes(range(256)))
    with pytest.raises(AnalysisError, match="Excel workbook"):
        tidy.detect_format(xlsx)
    blob = tmp_path / "blob.csv"
    blob.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(AnalysisError, match="binary file"):
        tidy.load_csv(blob)


def test_unknown_columns_name_what_is_needed(tmp_path):
    path = write(tmp_path, "odd.csv", "subject,system,score\ns1,A,3\n")
    with pytest.raises(AnalysisError, match="participant, condition, value") as err:
        tidy.detect_format(path)
    assert "subject, system, score" in str(err.value)


def test_text_in_a_number_column_names_the_line(tmp_path):
    path = write(tmp_path, "t.csv", "participant,condition,value\np1,A,3\np1,B,three\n")
    with pytest.raises(AnalysisError, match=r"column value .*'three'.*line\(s\) 3"):
        tidy.load_csv(path)


def test_ragged_csv_is_refused(tmp_path):
    path = write(tmp_path, "r.csv", "participant,condition,value\np1,A,3\np1,B,4,5,6\n")
    with pytest.raises(AnalysisError, match="not a well-formed CSV"):
        tidy.load_csv(path)


def test_design_checks_name_the_missing_columns_and_the_designs():
    ratings = pd.DataFrame({"participant": ["p1"], "condition": ["A"], "value": [3.0]})
    with pytest.raises(AnalysisError, match="a pairwise analysis needs the columns participant, pair_a, pair_b, "
                                            "choice; missing: pair_a, pair_b, choice"):
        tidy.normalise(ratings, design="pairwise")
    with pytest.raises(AnalysisError, match="missing: value"):
        tidy.normalise(ratings.drop(columns="value"), design="within")
    with pytest.raises(AnalysisError, match="unknown design 'anova': use one of within, between, pairwise, mushra"):
        tidy.normalise(ratings, design="anova")
    with pytest.raises(AnalysisError, match="unknown format 'excel'"):
        tidy.load_csv("x.csv", fmt="excel")


def test_unknown_values_of_fixed_columns_are_refused():
    df = pd.DataFrame({"participant": ["p1"], "condition": ["A"], "value": [3.0], "trial_kind": ["practice"]})
    with pytest.raises(AnalysisError, match="column trial_kind has value\\(s\\) 'practice'"):
        tidy.normalise(df, design="within")
    df = pd.DataFrame({"participant": ["p1"], "condition": ["A"], "value": [3.0], "role": ["anker"]})
    with pytest.raises(AnalysisError, match="column role"):
        tidy.normalise(df, design="mushra")
