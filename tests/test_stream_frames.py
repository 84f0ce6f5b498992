"""Pose-stream lines: every tool's shape of a frame gives the same arrays, and every broken line says
which line and what was expected."""

from __future__ import annotations

import json
import timeit

import numpy as np
import pytest

from cascade_cli.stream.frames import Frame, MalformedLine, parse_frame, read_frames

rng = np.random.default_rng(0)
# COCO-17 image coordinates with scores, two joints missing (score 0, as pose tools mark them).
XY = np.round(rng.uniform(0, 640, (17, 2)), 3)
SCORE = np.round(rng.uniform(0.2, 1, 17), 3)
SCORE[[3, 4]] = 0
# MediaPipe-33 normalised landmarks with visibility.
XYZ = np.round(rng.uniform(-1, 1, (33, 3)), 4)
VISIBILITY = np.round(rng.uniform(0, 1, 33), 4)


def nested(xy, score=None):
    return [[*p, s] for p, s in zip(xy.tolist(), score.tolist())] if score is not None else xy.tolist()


def flat(xy, score=None):
    return [v for joint in nested(xy, score) for v in joint]


def parse(content, joints=17, coords=2, lineno=1) -> Frame:
    return parse_frame(json.dumps(content), lineno, joints, coords)


def error(content, joints=17, coords=2, lineno=12) -> str:
    line = content if isinstance(content, str) else json.dumps(content)
    with pytest.raises(MalformedLine) as caught:
        parse_frame(line, lineno, joints, coords)
    assert caught.value.lineno == lineno and "\n" not in str(caught.value)
    return str(caught.value)


def assert_frame(frame, xy, score):
    assert frame.persons.dtype == np.float32 and frame.persons.shape == (1, *xy.shape)
    np.testing.assert_array_equal(frame.persons[0], xy.astype(np.float32))
    if score is None:
        assert frame.confidence is None
    else:
        assert frame.confidence.dtype == np.float32
        np.testing.assert_array_equal(frame.confidence[0], score.astype(np.float32))


@pytest.mark.parametrize("content", [
    [nested(XY, SCORE)],  # bare list of nested joints
    {"persons": [nested(XY, SCORE)]},
    {"keypoints": [nested(XY, SCORE)]},  # YOLO pose: results[0].keypoints.data.tolist()
    [flat(XY, SCORE)],  # a flat person in a bare list
    {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": flat(XY, SCORE),  # OpenPose
                                 "face_keypoints_2d": [], "pose_keypoints_3d": []}]},
    {"skeletons": [{"keypoints": nested(XY, SCORE)}]},
    {"poses": [{"joints": [{"x": x, "y": y, "score": s} for (x, y), s in zip(XY.tolist(), SCORE.tolist())]}]},
    [[{"x": x, "y": y, "confidence": s} for (x, y), s in zip(XY.tolist(), SCORE.tolist())]],
], ids=["bare", "persons", "yolo", "flat", "openpose", "keypoints-object", "joint-objects", "confidence-key"])
def test_every_2d_form_with_scores_gives_the_same_arrays(content):
    frame = parse(content)
    assert_frame(frame, XY, SCORE)
    assert frame.confidence[0, 3] == 0 and frame.persons[0, 3].any()  # a missing joint is kept as given


@pytest.mark.parametrize("content", [
    [nested(XY)],
    {"people": [flat(XY)]},
    {"people": [{"pose_keypoints_2d": flat(XY)}]},
    [[{"x": x, "y": y} for x, y in XY.tolist()]],
], ids=["nested", "flat", "openpose", "joint-objects"])
def test_2d_forms_without_scores(content):
    assert_frame(parse(content), XY, None)


@pytest.mark.parametrize("content", [
    [[{"x": x, "y": y, "z": z, "visibility": v, "presence": 0.5} for (x, y, z), v in zip(XYZ.tolist(),
                                                                                        VISIBILITY.tolist())]],
    [nested(XYZ, VISIBILITY)],
    {"people": [{"landmarks": nested(XYZ, VISIBILITY)}]},
    {"people": [{"pose_keypoints_2d": [], "pose_keypoints_3d": flat(XYZ, VISIBILITY)}]},
], ids=["mediapipe", "nested", "landmarks", "openpose-3d"])
def test_3d_forms(content):
    assert_frame(parse(content, joints=33, coords=3), XYZ, VISIBILITY)


def test_3d_without_scores():
    assert_frame(parse([[{"x": x, "y": y, "z": z} for x, y, z in XYZ.tolist()]], 33, 3), XYZ, None)
    assert_frame(parse([flat(XYZ)], 33, 3), XYZ, None)


def test_multiple_persons_in_the_same_or_different_forms():
    other = XY[::-1] + 1
    expected = np.stack([XY, other]).astype(np.float32)
    for content in ([nested(XY, SCORE), nested(other, SCORE)],
                    {"people": [{"pose_keypoints_2d": flat(XY, SCORE)}, nested(other, SCORE)]}):
        frame = parse(content)
        assert frame.persons.shape == (2, 17, 2) and frame.confidence.shape == (2, 17)
        np.testing.assert_array_equal(frame.persons, expected)
        np.testing.assert_array_equal(frame.confidence, np.stack([SCORE, SCORE]).astype(np.float32))


@pytest.mark.parametrize("key", ["t", "timestamp", "time"])
def test_timestamp(key):
    assert parse({"persons": [nested(XY)], key: 0.033}).timestamp == 0.033
    assert parse({"persons": [], key: 12}).timestamp == 12.0
    assert parse({"persons": [], key: None}).timestamp is None
    assert parse([nested(XY)]).timestamp is None and parse({"persons": []}).timestamp is None
    assert error({"persons": [], key: "now"}) == f"line 12: '{key}' is \"now\"; expected a finite number"
    assert "expected a finite number" in error(f'{{"persons": [], "{key}": NaN}}')


@pytest.mark.parametrize("content", [[], {"persons": []}, {"people": [], "t": 1.5}])
def test_empty_frames(content):
    frame = parse(content)
    assert frame.persons.shape == (0, 17, 2) and frame.persons.dtype == np.float32 and frame.confidence is None


def test_not_json():
    message = error('{"persons": [[1, 2],')
    assert message.startswith("line 12: not JSON (Expecting value at column 21)")
    assert message.endswith("expected one JSON frame per line")


def test_wrong_joint_count():
    content = [nested(XY, SCORE), nested(XY[:13], SCORE[:13])]
    assert error(content, lineno=3) == "line 3: person 2 has 13 joints, the stream's layout has 17"
    assert error([nested(XY[:13])]) == "line 12: person 1 has 13 joints, the stream's layout has 17"
    assert error({"people": [{"pose_keypoints_2d": flat(XY[:13], SCORE[:13])}]}) == (
        "line 12: person 1 'pose_keypoints_2d' has 39 numbers; expected 17 joints as a flat list of 34 or 51 "
        "numbers, or as a list of joints")
    assert error(nested(XY)).endswith("(one person's joints? a frame is a list of persons)")


def test_wrong_values_per_joint():
    assert error([[[1, 2, 3, 4]] * 17]) == (
        "line 12: person 1 joint 0 has 4 values; expected 2 (x, y) or 3 (x, y, score)")
    joints = nested(XY)
    joints[5] = [1.0]
    assert error([joints]) == "line 12: person 1 joint 5 has 1 values; expected 2 (x, y) or 3 (x, y, score)"
    assert "joint 0 has 2 values; expected 3 (x, y, z) or 4 (x, y, z, score)" in error([nested(XY)] * 2, 17, 3)
    assert "person 1 joint 0 has no 'z'" in error([[{"x": 1, "y": 2}] * 33], 33, 3)


def test_scores_must_agree():
    assert error([nested(XY, SCORE), nested(XY)]) == (
        "line 12: person 1 has scores and person 2 has no scores; every joint of a frame must have a score, or none")
    joints = nested(XY)
    joints[7] = [1.0, 2.0, 0.5]
    assert "joint 0 has 2 values and joint 7 3" in error([joints])


def test_non_numeric_and_non_finite_values():
    joints = nested(XY)
    joints[2] = ["1.5", 2.0]  # numpy would read the string as a number; the stream must not
    assert error([joints]) == 'line 12: person 1 joint 2 has a non-numeric value "1.5"; expected numbers'
    joints[2] = [None, 2.0]
    assert "joint 2 has a non-numeric value null" in error([joints])
    joints[2] = [{"x": 1}, 2.0]
    assert "joint 2 has a non-numeric value {\"x\": 1}" in error([joints])
    line = json.dumps([flat(XY)]).replace(str(XY[4, 1]), "NaN", 1)
    assert error(line) == "line 12: person 1 joint 4 has a non-finite value (nan); expected finite numbers"
    assert "person 2 joint 0 has a non-finite value (inf)" in error(f"[{json.dumps(nested(XY))}, [[Infinity, 1]"
                                                                    f"{', [1, 2]' * 16}]]")
    assert "non-finite value (inf)" in error([[[1e300, 1]] * 17])  # beyond float32


def test_unknown_structure_names_the_accepted_keys():
    assert error({"frame": 3, "detections": []}) == (
        "line 12: an object without a person list (its keys: 'frame', 'detections'); expected the persons "
        "under one of 'persons', 'people', 'skeletons', 'poses', 'keypoints'")
    assert "a JSON string; expected a list of persons or an object" in error('"hello"')
    assert error({"people": {"0": []}}) == "line 12: 'people' is a JSON object; expected a list of persons"
    assert error([{"bbox": [0, 0, 1, 1]}]) == (
        "line 12: person 1 is an object without a joint list (its keys: 'bbox'); expected one of 'keypoints', "
        "'pose_keypoints_2d', 'landmarks', 'joints'")
    # OpenPose's 2-D x, y, score would otherwise pass for a 3-D layout's x, y, z.
    assert "expected one of 'keypoints', 'pose_keypoints_3d', 'landmarks', 'joints'" in error(
        {"people": [{"pose_keypoints_2d": flat(XYZ)}]}, 33, 3)
    assert "person 1 joint 3 is a JSON string; expected a list of 2 (x, y) or 3 (x, y, score) values" in error(
        [[[1, 2]] * 3 + ["nose"] + [[1, 2]] * 13])


def test_booleans_count_as_one_and_zero_in_every_path():  # a visibility flag, as some tools write it
    visible = (SCORE > 0).tolist()
    expected = (SCORE > 0).astype(np.float32)
    assert_frame(parse([[[*p, v] for p, v in zip(XY.tolist(), visible)]]), XY, expected)
    assert_frame(parse([[{"x": x, "y": y, "visibility": v} for (x, y), v in zip(XY.tolist(), visible)]]), XY,
                 expected)


def test_malformed_line_reads_as_one_line():
    exc = MalformedLine(12, "what is wrong")
    assert str(exc) == "line 12: what is wrong" and exc.lineno == 12 and exc.message == "what is wrong"


def test_read_frames_numbers_lines_skips_blanks_and_yields_errors_in_place():
    lines = [json.dumps([nested(XY)]) + "\n", "\n", "   \t\n", "not json\n", json.dumps({"persons": [], "t": 2}),
             "[]"]
    out = list(read_frames(lines, 17, 2))
    assert [lineno for lineno, _ in out] == [1, 4, 5, 6]
    assert isinstance(out[0][1], Frame) and out[0][1].persons.shape == (1, 17, 2)
    assert isinstance(out[1][1], MalformedLine) and str(out[1][1]).startswith("line 4: not JSON")
    assert out[2][1].timestamp == 2.0 and out[3][1].persons.shape == (0, 17, 2)


def test_a_line_parses_well_under_a_millisecond():
    nested_line = json.dumps({"persons": [nested(XYZ, VISIBILITY)], "t": 1.0})
    mediapipe_line = json.dumps([[{"x": x, "y": y, "z": z, "visibility": v}
                                  for (x, y, z), v in zip(XYZ.tolist(), VISIBILITY.tolist())]])
    for line in (nested_line, mediapipe_line):
        seconds = min(timeit.repeat(lambda: parse_frame(line, 1, 33, 3), number=200, repeat=5)) / 200
        assert seconds < 1e-3, f"{seconds * 1e3:.2f} ms a line"
