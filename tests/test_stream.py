"""`cascade predict --stream`: windows over JSON-line pose frames, classified as files are."""

import json
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from cascade_cli import lifecycle
from cascade_cli.cli import app
from cascade_cli.data.format import open_dataset
from cascade_cli.errors import UserError
from cascade_cli.inference import load_classifier
from cascade_cli.layouts import COCO17, PENN13
from cascade_cli.layouts.mapping import joint_map
from cascade_cli.predict import predict
from cascade_cli.stream.classify import StreamClassifier, StreamSummary, classify_stream, stream_classifier
from cascade_cli.stream.frames import read_frames
from cascade_cli.stream.windows import Window, windows
from tests.conftest import TINY


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    lifecycle.pretrain(root / "pre", data=tiny_dataset, overrides=TINY)
    lifecycle.finetune(root / "ft", pretrained=root / "pre")
    return root / "ft"


def _lines(clip: np.ndarray) -> list[str]:
    """(T, M, J, C) frames as JSON lines, one {"persons": ...} per frame."""
    return [json.dumps({"persons": frame.tolist(), "t": t / 30}) for t, frame in enumerate(clip)]


@pytest.fixture(scope="module")
def clip(tiny_dataset):
    ds = open_dataset(tiny_dataset)
    return ds.clip(int(ds.split_indices("xsub", "test")[0]))[:50]  # (50, 2, 25, 3)


def test_windows_cover_the_stream_and_the_end_is_flushed(clip):
    items = read_frames(_lines(clip), 25, 3)
    spans = [(w.first, w.last, len(w.frames)) for w in windows(items, window=16, stride=8)]
    assert spans == [(1, 16, 16), (9, 24, 16), (17, 32, 16), (25, 40, 16), (33, 48, 16), (35, 50, 16)]
    short = [(w.first, w.last) for w in windows(read_frames(_lines(clip[:5]), 25, 3), window=16, stride=8)]
    assert short == [(1, 5)]  # a stream shorter than a window is one window at the end


def test_a_live_source_skips_the_windows_it_cannot_keep_up_with(clip):
    live = windows(read_frames(_lines(clip), 25, 3), window=16, stride=8, live=True)
    time.sleep(0.5)  # the classifier is busy while all 50 frames arrive
    got = list(live)
    assert [(w.first, w.last, w.skipped) for w in got] == [(35, 50, (50 - 16) // 8)]
    assert all(len(w.frames) <= 16 for w in got)  # only the ring of the last window's frames is kept


def test_a_window_is_classified_as_the_same_frames_in_a_file(run, clip, tmp_path):
    records = list(classify_stream(stream_classifier(load_classifier(run)), _lines(clip[:20]), window=20, stride=20))
    assert len(records) == 1 and records[0]["window"] == [1, 20] and records[0]["latency_ms"] > 0
    np.savez(tmp_path / "clip.npz", data=clip[None, :20])  # (1, T, M, J, C): the same frames, every person
    expected = predict(run, [tmp_path / "clip.npz"])[0]
    assert [t["class"] for t in records[0]["top"]] == [t["class"] for t in expected["top"]]
    np.testing.assert_allclose([t["prob"] for t in records[0]["top"]], [t["prob"] for t in expected["top"]],
                               atol=1e-5)


def test_malformed_lines_are_reported_by_number_and_skipped_or_fatal(run, clip):
    lines = _lines(clip[:20])
    lines[3] = '{"persons": [[[1, 2]]]}'  # one joint of two values
    lines[7] = "not json"
    lines.insert(10, "")  # a blank line is no frame at all
    streamer = stream_classifier(load_classifier(run))
    summary = StreamSummary()
    records = list(classify_stream(streamer, lines, window=8, stride=8, summary=summary))
    malformed = [r["malformed"] for r in records if "malformed" in r]
    assert [m["line"] for m in malformed] == [4, 8] and "not JSON" in malformed[1]["error"]
    assert summary.frames == 18 and summary.malformed == 2 and summary.windows == 3  # 8, 16 and the flush of 18
    with pytest.raises(UserError, match="line 4: .*--strict"):
        list(classify_stream(streamer, lines, window=8, stride=8, strict=True))


def test_empty_frames_are_absent_persons(run, clip):
    lines = _lines(clip[:12])
    lines[5] = "[]"
    lines[6] = '{"persons": []}'
    streamer = stream_classifier(load_classifier(run))
    window = list(windows(read_frames(lines, 25, 3), window=12, stride=12))[0]
    frames = streamer.window_clip(window).frames
    assert frames.shape == (12, 2, 25, 3) and not frames[5:7].any() and frames[4].any()
    assert len(list(classify_stream(streamer, lines, window=12, stride=12))) == 1


def test_a_window_in_another_layout_is_mapped_joint_by_joint():
    # COCO-17 persons whose joint j sits at (j, 100 + j), scored 1, to a Penn-13 model's joints.
    streamer = StreamClassifier(None, COCO17, joint_map("coco17", PENN13))
    persons = np.stack([np.arange(17), 100 + np.arange(17)], axis=-1)[None].astype(np.float32)  # (1, 17, 2)
    scored = [type("F", (), {"persons": persons, "confidence": np.ones((1, 17), np.float32)})(),
              type("F", (), {"persons": np.zeros((0, 17, 2), np.float32), "confidence": None})()]
    clip = streamer.window_clip(Window(1, 2, scored, 0.0))
    assert clip.frames.shape == (2, 1, 13, 2)
    for penn_joint in ("left_wrist", "right_knee", "left_shoulder"):
        j = COCO17.joint_names.index(penn_joint)
        np.testing.assert_array_equal(clip.frames[0, 0, PENN13.joint_names.index(penn_joint)], [j, 100 + j])
    np.testing.assert_allclose(clip.frames[0, 0, 0], [2.0, 102.0])  # head: the mean of nose, eyes and ears (0-4)
    assert clip.confidence[0].min() == 1.0 and clip.confidence[1].max() == 0.0  # the empty frame: nobody seen


def test_stream_options_are_checked_before_any_frame(run):
    classifier = load_classifier(run)
    with pytest.raises(UserError, match="no joint mapping from coco17 to ntu25"):
        stream_classifier(classifier, layout="coco17")
    with pytest.raises(UserError, match="no exit head"):
        stream_classifier(classifier, exit_threshold=0.9)


def test_predict_stream_from_stdin_and_from_a_file(run, clip, tmp_path):
    text = "\n".join(_lines(clip[:24])) + "\n"
    runner = CliRunner()
    live = runner.invoke(app, ["predict", str(run), "--stream", "-", "--window", "8", "--stride", "8"], input=text)
    assert live.exit_code == 0, live.output
    records = [json.loads(line) for line in live.stdout.splitlines()]
    windows_seen = [r for r in records if "window" in r]
    assert windows_seen and windows_seen[-1]["window"][1] == 24  # the last frames always get classified
    summary = json.loads(live.stderr.strip().splitlines()[-1])
    assert summary["frames"] == 24 and summary["windows"] + summary["skipped_windows"] == 3
    (tmp_path / "poses.jsonl").write_text(text)
    paced = runner.invoke(app, ["predict", str(run), "--stream", str(tmp_path / "poses.jsonl"), "--window", "8",
                                "--stride", "4", "--top-k", "2"])
    assert paced.exit_code == 0, paced.output
    spans = [json.loads(line)["window"] for line in paced.stdout.splitlines()]
    assert spans == [[1, 8], [5, 12], [9, 16], [13, 20], [17, 24]]
    assert all(len(json.loads(line)["top"]) == 2 for line in paced.stdout.splitlines())
    both = runner.invoke(app, ["predict", str(run), str(tmp_path / "poses.jsonl"), "--stream", "-"])
    assert both.exit_code != 0 and "not both" in both.output
    missing = runner.invoke(app, ["predict", str(run), "--stream", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code != 0 and "no such file" in missing.output and "Traceback" not in missing.output


def test_the_readme_example_stream_reads_as_coco17_for_a_penn_model():
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "pose_stream_coco17.jsonl"
    items = list(read_frames(example.read_text().splitlines(), COCO17.num_joints, COCO17.coords))
    assert len(items) == 40 and all(not isinstance(frame, Exception) for _, frame in items)
    assert len(items[20][1].persons) == 0  # the frame where nobody was seen
    streamer = StreamClassifier(None, COCO17, joint_map("coco17", PENN13))
    window = list(windows(iter(items), window=32, stride=4))[0]
    clip = streamer.window_clip(window)
    assert clip.frames.shape == (32, 1, 13, 2) and clip.confidence[20].max() == 0.0
    # The left ear is never seen (score 0): Penn's head is the mean of the nose, the eyes and the right ear.
    np.testing.assert_allclose(clip.frames[0, 0, 0], [(640 + 650 + 630 + 618) / 4, (200 + 190 + 190 + 196) / 4])


@pytest.mark.parametrize("layout, line_of, target", [
    ("coco17", lambda p: {"keypoints": [p.tolist()]}, "penn13"),  # YOLO pose
    ("openpose25", lambda p: {"people": [{"pose_keypoints_2d": p.ravel().tolist()}]}, "penn13"),  # OpenPose
    ("mediapipe33", lambda p: [[dict(zip(("x", "y", "z", "visibility"), j)) for j in p.tolist()]], "penn13"),
    ("ntu25", lambda p: {"skeletons": [p.tolist()], "t": 0.1}, "kinect_v1_20"),  # a Kinect v2 with scores
])
def test_every_estimator_layout_streams_into_a_model_layout(layout, line_of, target):
    from cascade_cli.layouts import LAYOUTS

    source, goal = LAYOUTS[layout], LAYOUTS[target]
    J, C = source.num_joints, source.coords
    person = np.concatenate([np.arange(J)[:, None] + 100 * np.arange(C)[None], np.ones((J, 1))], axis=1)
    (lineno, frame), = read_frames([json.dumps(line_of(person))], J, C)
    assert frame.persons.shape == (1, J, C) and frame.confidence.shape == (1, J)
    mapping = joint_map(layout, goal)
    clip = StreamClassifier(None, source, mapping).window_clip(Window(1, 1, [frame], 0.0))
    assert clip.frames.shape == (1, 1, goal.num_joints, goal.coords)
    # Each model joint holds the stream joint(s) the mapping names (x is the source index), unchanged.
    np.testing.assert_allclose(clip.frames[0, 0, :, 0], [np.mean(joints) for joints in mapping.sources])
    np.testing.assert_allclose(clip.frames[0, 0, :, 1], [100 + np.mean(joints) for joints in mapping.sources])


def test_a_stream_through_the_cascade_and_a_detector(run, clip, tmp_path):
    from cascade_cli.anomaly.alerts import tune
    from cascade_cli.anomaly.detector import fit_detector
    from cascade_cli.exits.fit import fit_exit_heads

    checkpoint = fit_exit_heads(run, tmp_path / "exits.safetensors")
    detector = fit_detector(checkpoint, tmp_path / "detector", abnormal="wave")
    tune(detector, rule="single:energy")
    streamer = stream_classifier(load_classifier(checkpoint), exit_threshold=0.0, detector=detector)
    records = list(classify_stream(streamer, _lines(clip[:16]), window=8, stride=8))
    assert [r["window"] for r in records] == [[1, 8], [9, 16]]
    assert all(r["exit"] == "t1" and r["decision"] in ("LOG", "ALERT") for r in records)
    runner = CliRunner()
    text = "\n".join(_lines(clip[:16])) + "\n"
    cli = runner.invoke(app, ["predict", str(checkpoint), "--stream", "-", "--window", "16", "--detector",
                              str(tmp_path / "detector")], input=text)
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout.splitlines()[-1])["decision"] in ("LOG", "ALERT")
    other = runner.invoke(app, ["predict", str(run), "--stream", "-", "--detector", str(tmp_path / "detector")],
                          input=text)
    assert other.exit_code != 0 and "fitted on" in other.output and "Traceback" not in other.output
