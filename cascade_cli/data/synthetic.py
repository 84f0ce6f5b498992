"""A built-in synthetic action dataset, so the toolkit can be tried and tested without downloads.

Each clip animates an NTU 25-joint skeleton (metres, y up, camera space like Kinect) by forward
kinematics: a rest pose scaled per subject, joint rotations that follow the action over time, the
lowest foot kept on the floor, then a camera view. Real datasets' nuisance factors are all present:
body size and proportions (per subject), viewpoint (three cameras at -45, 0 and +45 degrees plus
jitter), tempo, clip length, facing direction and sensor noise. The ten actions stay clearly
separable, so a small model reaches high accuracy in a CPU demo.

Every clip is drawn from its own generator seeded by (seed, class, clip), and every subject's body
from (seed, subject), so the output is byte-identical for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cascade_cli.data.format import DatasetWriter
from cascade_cli.data.registry import SYNTHETIC
from cascade_cli.errors import UserError

FPS = 30
NUM_SUBJECTS = 20
DEFAULT_CLIPS_PER_CLASS = 50
CAMERA_YAWS = {1: -np.pi / 4, 2: 0.0, 3: np.pi / 4}
SKELETON = SYNTHETIC.layout  # NTU's 25 joints: the animations below name them
J = {name: i for i, name in enumerate(SKELETON.joint_names)}
FEET = [J["AnkleLeft"], J["FootLeft"], J["AnkleRight"], J["FootRight"]]


def _rest_pose() -> np.ndarray:
    """A 1.7 m person standing on the floor (y = 0), facing -z (the camera), their left towards +x."""
    centre = {"SpineBase": (0, 0.95, 0), "SpineMid": (0, 1.2, 0.01), "SpineShoulder": (0, 1.42, 0),
              "Neck": (0, 1.5, 0), "Head": (0, 1.63, -0.01)}
    left = {"Shoulder": (0.18, 1.42, 0), "Elbow": (0.21, 1.14, 0.02), "Wrist": (0.22, 0.89, 0),
            "Hand": (0.22, 0.82, -0.01), "Thumb": (0.19, 0.79, -0.04), "HandTip": (0.22, 0.73, -0.01),
            "Hip": (0.09, 0.92, 0), "Knee": (0.1, 0.5, 0), "Ankle": (0.1, 0.08, 0.02), "Foot": (0.1, 0.02, -0.12)}
    pose = np.zeros((SKELETON.num_joints, 3))
    for name, xyz in centre.items():
        pose[J[name]] = xyz
    for name, (x, y, z) in left.items():
        pose[J[name + "Left"]] = (x, y, z)
        pose[J[name + "Right"]] = (-x, y, z)
    return pose


def _kinematic_tree(root: int = J["SpineBase"]) -> tuple[np.ndarray, list[int]]:
    """Parents when NTU's bone graph hangs from the pelvis (CTR-GCN roots it at the chest, but a body
    moves from its hips), and a joint order that visits every parent before its children."""
    neighbours: dict[int, list[int]] = {j: [] for j in range(SKELETON.num_joints)}
    for a, b in SKELETON.bones:
        neighbours[a].append(b)
        neighbours[b].append(a)
    parent = np.full(SKELETON.num_joints, -1)
    order = [root]
    for j in order:  # breadth-first; `order` grows while it is walked
        for k in neighbours[j]:
            if k != root and parent[k] < 0:
                parent[k] = j
                order.append(k)
    return parent, order


REST = _rest_pose()
PARENT, ORDER = _kinematic_tree()
BONES = REST - REST[np.maximum(PARENT, 0)]  # (25, 3) offset of each joint from its parent at rest


# ----------------------------------------------------------------------------------------------
# Rotation and timing helpers. Body frame: x = the person's left, y = up, z = behind them. A positive
# angle about x swings a hanging limb forward; about z it lifts a left limb sideways (negative lifts a
# right one); about y it turns a forward-pointing left arm inwards.


def _rot(axis: str, angle: np.ndarray) -> np.ndarray:  # (T,) -> (T, 3, 3)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    c, s = np.cos(angle), np.sin(angle)
    r = np.tile(np.eye(3), (len(angle), 1, 1))
    r[:, i, i], r[:, i, j], r[:, j, i], r[:, j, j] = c, -s, s, c
    return r


def _arc(s: np.ndarray, start: float = 0.0, end: float = 1.0) -> np.ndarray:
    """0 outside [start, end], a half sine rising to 1 in between; squared it is a smooth bump."""
    return np.sin(np.pi * np.clip((s - start) / (end - start), 0, 1))


def _reps(s: np.ndarray, n: int) -> np.ndarray:
    """n smooth 0 -> 1 -> 0 bumps over the action."""
    return np.sin(np.pi * n * s) ** 2


def _hold(s: np.ndarray, ramp: float = 0.25) -> np.ndarray:
    """Ease in over the first `ramp` of the action, hold at 1, ease out over the last `ramp`."""
    up = np.clip(np.minimum(s, 1 - s) / ramp, 0, 1)
    return up * up * (3 - 2 * up)


@dataclass
class Motion:
    """One person's animation: local joint rotations plus where the body is and which way it faces."""
    rotations: dict[str, np.ndarray]  # joint name -> (T, 3, 3), rotating the bones below that joint
    shift: np.ndarray  # (T, 3) displacement of the pelvis in the body frame; y is added above the floor
    heading: np.ndarray  # (T,) rotation of the whole body about the vertical axis


def _still(s: np.ndarray, **rotations: np.ndarray) -> Motion:
    return Motion(rotations, np.zeros((len(s), 3)), np.zeros(len(s)))


def _flat_feet(hip: np.ndarray, knee: np.ndarray) -> np.ndarray:
    """Ankle angle that keeps a foot parallel to the floor whatever the hip and knee do."""
    return _rot("x", -(hip + knee))


def _legs(side: str, hip: np.ndarray, knee: np.ndarray) -> dict[str, np.ndarray]:
    return {f"Hip{side}": _rot("x", hip), f"Knee{side}": _rot("x", knee), f"Ankle{side}": _flat_feet(hip, knee)}


# ----------------------------------------------------------------------------------------------
# The actions. Each maps action progress s in [0, 1] (held at 0 before and 1 after the action) to a
# Motion; `amp` scales the main angles (how big this person moves), `rng` draws per-clip details.


def wave(s: np.ndarray, amp: float, rng: np.random.Generator) -> Motion:
    up, waves = _hold(s, 0.2), rng.integers(2, 5)
    swing = 1.3 + 0.45 * np.sin(2 * np.pi * waves * s)  # forearm sways about the upright
    return _still(s, ShoulderRight=_rot("z", -1.35 * amp * up), ElbowRight=_rot("z", -swing * up))


def arm_raise(s: np.ndarray, amp: float, rng: np.random.Generator) -> Motion:
    lift = 2.7 * amp * _reps(s, rng.integers(1, 3))  # both arms forward, up overhead and down
    bend = _rot("x", 0.15 * lift)
    return _still(s, ShoulderLeft=_rot("x", lift), ShoulderRight=_rot("x", lift), ElbowLeft=bend, ElbowRight=bend)


def clap(s: np.ndarray, amp: float, rng: np.random.Generator) -> Motion:
    arms, claps = _hold(s, 0.2), rng.integers(3, 7)
    opening = 0.5 * (1 - np.cos(2 * np.pi * claps * s))  # 0 when the hands meet
    inward = arms * (0.3 - 0.9 * amp * opening)
    forward = _rot("x", 1.25 * arms)
    return _still(s, ShoulderLeft=_rot("y", inward) @ forward, ShoulderRight=_rot("y", -inward) @ forward,
                  ElbowLeft=_rot("x", 0.5 * arms), ElbowRight=_rot("x", 0.5 * arms))


def squat(s: np.ndarray, amp: float, rng: np.random.Generator) -> Motion:
    depth = amp * _reps(s, rng.integers(1, 3))
    hip, knee = 1.5 * depth, -2.1 * depth
    return _still(s, SpineMid=_rot("x", -0.35 * depth), ShoulderLeft=_rot("x", 1.4 * depth),
                  ShoulderRight=_rot("x", 1.4 * depth), **_legs("Left", hip, knee), **_legs("Right", hip, knee))


def jump(s: np.ndarray, amp: float, rng: np.random.Generator) -> Motion:
    crouch = 0.55 * (_arc(s, 0.0, 0.35) ** 2 + _arc(s, 0.55, 0.9) ** 2)
    flight = _arc(s, 0.3, 0.6)
    hip, knee = 1.2 * crouch, -1.8 * crouch
    arms = _rot("x", -0.7 * crouch + 2.6 * amp * flight)  # swing back while crouching, up in the air
    motion = _still(s, ShoulderLeft=arms, ShoulderRight=arms, **_legs("Left", hip, knee), **_legs("Right", hip, knee))
    motion.shift[:, 1] = rng.uniform(0.2, 0.4) * amp * flight
    return motion


def kick(s: np.ndarray, amp: float, rng: np.random.Generator) -> Motion:
    raise_leg = _arc(s, 0.15, 0.85) ** 2
    chamber = _arc(s, 0.1, 0.9) ** 2 - 0.9 * _arc(s, 0.35, 0.65) ** 2  # bent, snapped straight, bent
    balance = 0.4 * raise_leg
    return _still(s, HipRight=_rot("x", 1.4 * amp * raise_leg), KneeRight=_rot("x", -1.3 * chamber),
                  SpineMid=_rot("x", 0.2 * raise_leg), ShoulderLeft=_rot("z", balance),
                  ShoulderRight=_rot("z", -balance))


def bow(s: np.ndarray, amp: float, rng: np.random.Generator) -> Motion:
    bend = rng.uniform(0.9, 1.3) * amp * _hold(s, 0.35)
    hang = _rot("x", bend)  # arms keep hanging down while the torso tips forward
    return _still(s, SpineMid=_rot("x", -bend), Neck=_rot("x", -0.3 * bend), ShoulderLeft=hang, ShoulderRight=hang)


def _steps(s: np.ndarray, cycles: float, stride: float) -> dict[str, np.ndarray]:
    """Alternating leg swings with the knee bending during each swing, and the arms countering."""
    phase = 2 * np.pi * cycles * s
    swing, lift = stride * np.sin(phase), np.cos(phase)
    return {**_legs("Left", swing, -2 * stride * np.maximum(lift, 0)),
            **_legs("Right", -swing, -2 * stride * np.maximum(-lift, 0)),
            "ShoulderLeft": _rot("x", -0.8 * swing), "ShoulderRight": _rot("x", 0.8 * swing)}


def turn_around(s: np.ndarray, amp: float, rng: np.random.Generator) -> Motion:
    motion = _still(s, **_steps(s, rng.uniform(1.5, 2.5), 0.25 * _arc(s)))
    ease = s * s * (3 - 2 * s)
    motion.heading = rng.choice([-1, 1]) * rng.uniform(0.8, 1.2) * np.pi * ease
    return motion


def walk(s: np.ndarray, amp: float, rng: np.random.Generator) -> Motion:
    cycles = rng.uniform(1.5, 2.5)
    motion = _still(s, **_steps(s, cycles, 0.45 * amp))
    motion.shift[:, 2] = -0.8 * amp * cycles * s  # forward is -z in the body frame
    return motion


def handshake(s: np.ndarray, amp: float, rng: np.random.Generator) -> list[Motion]:
    """Two people face each other; each reaches the right hand forward-inward and pumps it."""
    grip, pumps = _hold(s, 0.3), rng.integers(2, 5)
    reach = _rot("y", -0.35 * grip) @ _rot("x", (1.0 + 0.15 * amp * np.sin(2 * np.pi * pumps * s)) * grip)
    gap = rng.uniform(0.45, 0.55)
    people = []
    for heading in (-np.pi / 2, np.pi / 2):  # facing +x and -x
        motion = _still(s, ShoulderRight=reach, ElbowRight=_rot("x", 0.5 * grip))
        motion.shift[:, 2], motion.heading[:] = gap, heading  # each stands `gap` behind the meeting point
        people.append(motion)
    return people


Action = Callable[[np.ndarray, float, np.random.Generator], "Motion | list[Motion]"]
# Class name (the registry's SYNTHETIC.class_names, whose order fixes the labels) -> (animation, seconds at tempo 1).
ACTIONS: dict[str, tuple[Action, float]] = {
    "wave": (wave, 2.4), "arm_raise": (arm_raise, 2.2), "clap": (clap, 2.0), "squat": (squat, 2.4),
    "jump": (jump, 1.6), "kick": (kick, 1.6), "bow": (bow, 2.4), "turn_around": (turn_around, 2.0),
    "walk": (walk, 2.6), "handshake": (handshake, 2.6),
}


# ----------------------------------------------------------------------------------------------
# Bodies, poses and cameras


@dataclass
class Body:
    """A subject's build and movement style: everything that stays the same across their clips."""
    bones: np.ndarray  # (25, 3) offset of each joint from its parent at rest, metres
    amp: float  # how big their movements are
    tempo: float  # how fast they move


def _body(seed: int, subject: int) -> Body:
    rng = np.random.default_rng([seed, 0, subject])
    scale = np.full(SKELETON.num_joints, rng.uniform(0.88, 1.12))
    for limb, spread in (("Elbow Wrist Hand Thumb HandTip", 0.08), ("Knee Ankle Foot", 0.07),
                         ("Shoulder", 0.12)):
        factor = rng.uniform(1 - spread, 1 + spread)
        for part in limb.split():
            scale[[J[part + "Left"], J[part + "Right"]]] *= factor
    return Body(BONES * scale[:, None], amp=rng.uniform(0.85, 1.1), tempo=rng.uniform(0.9, 1.1))


def _pose(motion: Motion, bones: np.ndarray) -> np.ndarray:
    """Forward kinematics: [T, 25, 3] joint positions in the scene, feet on the floor."""
    T = len(motion.heading)
    local = {J[name]: r for name, r in motion.rotations.items()}
    world = np.zeros((T, SKELETON.num_joints, 3, 3))
    pos = np.zeros((T, SKELETON.num_joints, 3))
    for j in ORDER:
        if PARENT[j] < 0:
            world[:, j] = _rot("y", motion.heading)
        else:
            pos[:, j] = pos[:, PARENT[j]] + world[:, PARENT[j]] @ bones[j]
            world[:, j] = world[:, PARENT[j]]
        if j in local:
            world[:, j] = world[:, j] @ local[j]
    pos[:, :, 1] -= pos[:, FEET, 1].min(axis=1, keepdims=True)  # lowest foot on the floor
    return pos + (motion.shift @ _rot("y", motion.heading[:1])[0].T)[:, None]


def _clip(seed: int, label: int, index: int, subject: int, camera: int) -> np.ndarray:
    """One clip, [T, persons, 25, 3] float32 in camera space."""
    action, seconds = ACTIONS[SYNTHETIC.class_names[label]]
    rng = np.random.default_rng([seed, 1, label, index])
    body = _body(seed, subject)
    tempo = body.tempo * rng.uniform(0.75, 1.35)
    duration = round(seconds * FPS / tempo)
    lead_in, lead_out = rng.integers(0, 30, size=2)
    T = int(np.clip(lead_in + duration + lead_out, 30, 150))
    s = np.clip((np.arange(T) - lead_in) / duration, 0, 1)
    amp = body.amp * rng.uniform(0.9, 1.1)

    motions = action(s, amp, rng)
    motions = motions if isinstance(motions, list) else [motions]
    bodies = [body, _body(seed, subject % NUM_SUBJECTS + 1)]  # the next subject partners in two-person actions
    people = np.stack([_pose(m, b.bones) for m, b in zip(motions, bodies)], axis=1)  # (T, persons, 25, 3)

    # Face a random way near the camera, view from the chosen camera, place in front of it.
    view = _rot("y", np.array([rng.uniform(-0.35, 0.35) + CAMERA_YAWS[camera]]))[0]
    tilt = _rot("x", np.array([rng.uniform(-0.1, 0.1)]))[0]
    place = np.array([rng.uniform(-0.4, 0.4), -rng.uniform(0.8, 1.1), rng.uniform(2.6, 3.4)])
    scene = (people @ view.T + place) @ tilt.T
    scene += rng.normal(0, rng.uniform(0.004, 0.012), scene.shape)  # sensor jitter, metres
    return scene.astype(np.float32)


def make_synthetic(out_dir: str | Path, clips_per_class: int = DEFAULT_CLIPS_PER_CLASS, seed: int = 0,
                   overwrite: bool = False) -> Path:
    """Write the synthetic dataset (10 classes x clips_per_class) and return its directory.

    Clip i of class c is performed by subject 1 + (i + c) % 20 and seen by camera 1 + i % 3, so every
    class has clips from train and test subjects as soon as clips_per_class >= 2.
    """
    if clips_per_class < 1:
        raise UserError(f"clips per class must be at least 1, got {clips_per_class}")
    subjects = []
    with DatasetWriter(out_dir, name=SYNTHETIC.name, layout=SYNTHETIC.layout, persons=SYNTHETIC.persons,
                       class_names=SYNTHETIC.class_names, confidence=SYNTHETIC.confidence,
                       overwrite=overwrite) as writer:
        for label, name in enumerate(SYNTHETIC.class_names):
            for i in range(clips_per_class):
                subject, camera = 1 + (i + label) % NUM_SUBJECTS, 1 + i % 3
                writer.add_clip(_clip(seed, label, i, subject, camera), label,
                                f"{name}_{i:03d}_P{subject:02d}C{camera}", subject=subject, camera=camera)
                subjects.append(subject)
        writer.set_protocol("xsub", SYNTHETIC.protocols["xsub"], np.array(subjects) % 2 == 0)
    return Path(out_dir)
