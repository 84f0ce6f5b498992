"""One line of a live pose stream as one frame of arrays, whichever pose tool printed it.

Pose tools (OpenPose, MediaPipe, YOLO pose, home-made scripts) print a frame per line in JSON shapes that
differ only in their key names and in whether joints are nested, flat or objects, so `cascade predict
--stream` takes their output as it comes, piped in, with no conversion step.

A line is one frame, either

    [person, ...]                       a list of persons
    {"persons": [person, ...], ...}     an object with the persons under the first it has of "persons",
                                        "people", "skeletons", "poses", "keypoints", and optionally the
                                        frame's time under the first of "t", "timestamp", "time" (a finite
                                        number; null counts as none); other keys are ignored

and a person, with J and C the joints and coordinates (2 or 3) of the stream's layout, one of

    [[x, y], ...]                       J joints of C values (x, y or x, y, z) or C + 1 (the last a score)
    [x, y, x, y, ...]                   flat, J*C numbers or J*(C + 1) with a score after each joint
    [{"x": .., "y": .., "z": ..}, ...]  J joints as objects, "z" only for C = 3, and optionally a score
                                        under the first of "visibility", "score", "confidence"
    {"keypoints": joints, ...}          an object with one of the three joint lists above under the first
                                        it has of "keypoints", "pose_keypoints_2d" (C = 2 only),
                                        "pose_keypoints_3d" (C = 3 only), "landmarks", "joints"

so that, for instance, OpenPose's {"people": [{"pose_keypoints_2d": [x, y, c, ...]}]}, YOLO pose's
{"keypoints": [[[x, y, s], ...]]} and MediaPipe's [[{"x": .., "y": .., "z": .., "visibility": ..}, ...]]
are all frames. (OpenPose writes both pose_keypoints_2d and pose_keypoints_3d, the latter empty without
3-D reconstruction; and its 2-D x, y, score read as a 3-D layout's x, y, z would pass the score off as
depth, hence one key per coordinate count.)

Values are kept as given (true and false count as 1 and 0, as numpy reads them), a score of 0 meaning a
missing joint. Every joint of a frame has a score or none does: a frame mixing the two is refused rather
than guessed at. `[]` and an empty person list are frames with no one in them; blank lines are no frames
at all, and `read_frames` skips them. Anything else is a `MalformedLine` saying what was expected,
counting lines and persons from 1 and joints from 0, as layouts number them.

A frame of lists of numbers goes through one `json.loads` and one numpy conversion; the per-joint loops
only run for joints given as objects, persons given in different forms, and to say what is wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

PERSON_LISTS = ("persons", "people", "skeletons", "poses", "keypoints")
TIMESTAMPS = ("t", "timestamp", "time")
AXES = ("x", "y", "z")
SCORES = ("visibility", "score", "confidence")


class MalformedLine(Exception):
    """A stream line that is not a frame; str() reads `line 12: what is wrong`."""

    def __init__(self, lineno: int, message: str):
        super().__init__(lineno, message)
        self.lineno = lineno
        self.message = message

    def __str__(self) -> str:
        return f"line {self.lineno}: {self.message}"


@dataclass
class Frame:
    persons: np.ndarray  # (M, J, C) float32 coordinates, M = 0 when no one is in the frame
    confidence: np.ndarray | None  # (M, J) float32 scores; None when the line carried none
    timestamp: float | None


class _Invalid(Exception):
    """What is wrong with a line, before parse_frame adds its number."""


def parse_frame(line: str, lineno: int, joints: int, coords: int) -> Frame:
    """One JSON line as a frame of `joints` x `coords` persons, or MalformedLine."""
    try:
        content = json.loads(line)
    except json.JSONDecodeError as exc:
        raise MalformedLine(lineno, f"not JSON ({exc.msg} at column {exc.colno}); expected one JSON frame "
                                    "per line") from None
    except RecursionError:
        raise MalformedLine(lineno, "JSON nested too deeply to read; expected one frame of persons of "
                                    "joints") from None
    try:
        persons, timestamp = _unwrap(content)
        values = _persons(persons, joints, coords)
    except _Invalid as exc:
        raise MalformedLine(lineno, str(exc)) from None
    if values.shape[2] == coords:
        return Frame(values, None, timestamp)
    return Frame(np.ascontiguousarray(values[..., :coords]), np.ascontiguousarray(values[..., coords]), timestamp)


def read_frames(lines: Iterable[str], joints: int, coords: int) -> Iterator[tuple[int, Frame | MalformedLine]]:
    """(line number from 1, frame) per non-blank line; a malformed line yields its MalformedLine instead
    of raising it, for the caller to stop at or report and skip."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield lineno, parse_frame(line, lineno, joints, coords)
        except MalformedLine as exc:
            yield lineno, exc


def _unwrap(content: object) -> tuple[list, float | None]:
    """A frame's person list and timestamp, under whichever keys its tool uses."""
    if isinstance(content, list):
        return content, None
    if not isinstance(content, dict):
        raise _Invalid(f"a JSON {_kind(content)}; expected a list of persons or an object with the persons "
                       f"under one of {_names(PERSON_LISTS)}")
    key = _first(content, PERSON_LISTS)
    if key is None:
        raise _Invalid(f"an object without a person list (its keys: {_names(content)}); expected the persons "
                       f"under one of {_names(PERSON_LISTS)}")
    if not isinstance(content[key], list):
        raise _Invalid(f"'{key}' is a JSON {_kind(content[key])}; expected a list of persons")
    time_key = _first(content, TIMESTAMPS)
    if time_key is None or content[time_key] is None:
        return content[key], None
    timestamp = _number(content[time_key])
    if timestamp is None or not math.isfinite(timestamp):
        raise _Invalid(f"'{time_key}' is {_show(content[time_key])}; expected a finite number")
    return content[key], timestamp


def _persons(persons: list, joints: int, coords: int) -> np.ndarray:
    """(M, J, V) float32 values, V = coords, or coords + 1 with the score last."""
    if not persons:
        return np.zeros((0, joints, coords), np.float32)
    values = _numeric(persons)
    if values is not None and values.ndim in (2, 3):  # every person a flat or nested list of numbers
        values = _regular(values, "person 1", joints, coords)
    else:
        each = [_person(person, n, joints, coords) for n, person in enumerate(persons, 1)]
        for n, person in enumerate(each[1:], 2):
            if person.shape != each[0].shape:
                scored = {coords: "has no scores", coords + 1: "has scores"}
                raise _Invalid(f"person 1 {scored[each[0].shape[2]]} and person {n} {scored[person.shape[2]]}; "
                               "every joint of a frame must have a score, or none")
        values = np.concatenate(each)
    bad = ~np.isfinite(values)
    if bad.any():
        m, j, v = np.argwhere(bad)[0]
        raise _Invalid(f"person {m + 1} joint {j} has a non-finite value ({values[m, j, v]}); expected finite "
                       "numbers")
    return values


def _person(person: object, n: int, joints: int, coords: int) -> np.ndarray:
    """One person in any form as (1, J, V); the slow path, for frames that are not all numbers alike."""
    where = f"person {n}"
    if isinstance(person, dict):
        keys = ("keypoints", f"pose_keypoints_{coords}d", "landmarks", "joints")
        key = _first(person, keys)
        if key is None:
            raise _Invalid(f"{where} is an object without a joint list (its keys: {_names(person)}); expected "
                           f"one of {_names(keys)}")
        person, where = person[key], f"{where} '{key}'"
    if not isinstance(person, list):
        raise _Invalid(f"{where} is a JSON {_kind(person)}; expected a list of {joints} joints, a flat list of "
                       "numbers or an object with a joint list")
    values = _numeric(person)
    if values is None:
        values = _irregular(person, where, joints, coords)
    return _regular(values[None], where, joints, coords)


def _irregular(person: list, where: str, joints: int, coords: int) -> np.ndarray:
    """A person's list that is not numbers in one shape: joints as objects, or else the value at fault."""
    if not any(isinstance(value, (list, dict)) for value in person):  # flat
        return _float32(_numbers(person, where))
    if len(person) != joints:
        raise _Invalid(f"{where} has {len(person)} joints, the stream's layout has {joints}")
    rows = [_joint(joint, f"{where} joint {j}", coords) for j, joint in enumerate(person)]
    for j, row in enumerate(rows):
        if len(row) != len(rows[0]):
            raise _Invalid(f"{where} joint 0 has {len(rows[0])} values and joint {j} {len(row)}; every joint "
                           "must have a score, or none")
    return _float32(rows)


def _joint(joint: object, where: str, coords: int) -> list[float]:
    axes = AXES[:coords]
    if isinstance(joint, dict):
        missing = [axis for axis in axes if axis not in joint]
        if missing:
            raise _Invalid(f"{where} has no '{missing[0]}'; expected an object with {_names(axes)} and "
                           f"optionally a score under one of {_names(SCORES)}")
        score = _first(joint, SCORES)
        return _numbers([joint[key] for key in (*axes, score) if key is not None], where)
    if not isinstance(joint, list):
        raise _Invalid(f"{where} is a JSON {_kind(joint)}; expected a list of {_counts(coords)} values or an "
                       f"object with {_names(axes)}")
    if len(joint) not in (coords, coords + 1):
        raise _Invalid(f"{where} has {len(joint)} values; expected {_counts(coords)}")
    return _numbers(joint, where)


def _regular(values: np.ndarray, where: str, joints: int, coords: int) -> np.ndarray:
    """Persons as (M, J*V) flat or (M, J, V) nested numbers -> (M, J, V); all alike, so messages name the
    first of them, `where`."""
    if values.ndim == 2:
        width = values.shape[1]
        if width not in (joints * coords, joints * (coords + 1)):
            single = values.shape[0] == joints and width in (coords, coords + 1)
            hint = " (one person's joints? a frame is a list of persons)" if single else ""
            raise _Invalid(f"{where} has {width} numbers; expected {joints} joints as a flat list of "
                           f"{joints * coords} or {joints * (coords + 1)} numbers, or as a list of joints{hint}")
        return values.reshape(len(values), joints, width // joints)
    if values.ndim != 3:
        raise _Invalid(f"{where} is a list nested {values.ndim - 1} deep; expected a list of joints or a flat "
                       "list of numbers")
    if values.shape[1] != joints:
        raise _Invalid(f"{where} has {values.shape[1]} joints, the stream's layout has {joints}")
    if values.shape[2] not in (coords, coords + 1):
        raise _Invalid(f"{where} joint 0 has {values.shape[2]} values; expected {_counts(coords)}")
    return values


def _numeric(value: list) -> np.ndarray | None:
    """float32 for a list of numbers in one shape; None for anything else (ragged lists, strings, null,
    objects, booleans alone), which the slow path then reads or explains."""
    try:
        array = np.asarray(value)
    except ValueError:  # ragged
        return None
    return _float32(array) if array.dtype.kind in "iuf" else None


def _float32(values) -> np.ndarray:
    with np.errstate(over="ignore"):  # beyond float32 is inf, which the finiteness check reports
        return np.asarray(values, dtype=np.float32)


def _numbers(values: list, where: str) -> list[float]:
    numbers = [_number(value) for value in values]
    if None in numbers:
        raise _Invalid(f"{where} has a non-numeric value {_show(values[numbers.index(None)])}; expected numbers")
    return numbers


def _number(value: object) -> float | None:
    """A JSON number as a float (inf beyond float range), true and false as 1 and 0; None for anything else."""
    if not isinstance(value, (int, float)):  # bool is an int
        return None
    try:
        return float(value)
    except OverflowError:  # an integer too big for a float
        return math.inf


def _first(mapping: dict, keys: tuple[str, ...]) -> str | None:
    return next((key for key in keys if key in mapping), None)


def _counts(coords: int) -> str:
    axes = ", ".join(AXES[:coords])
    return f"{coords} ({axes}) or {coords + 1} ({axes}, score)"


def _kind(value: object) -> str:
    kinds = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


def _names(keys) -> str:
    names = [f"'{key}'" for key in keys]
    if len(names) > 6:
        names = [*names[:6], "..."]
    return ", ".join(names) or "none"


def _show(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 30 else text[:27] + "..."
