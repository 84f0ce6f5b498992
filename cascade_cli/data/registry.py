"""The facts about every dataset cascade knows by name, in one place.

Prepared datasets and checkpoints are self-describing: their manifests carry the layout and class
names. But some code needs to know about a dataset before it has one: the converters write these
facts, the official-checkpoint importer must know which classes and joint order the released weights
expect, evaluation splits NTU scores into one- and two-person actions, and the ablation studies pick
the paper's Table-1 preset of a dataset. This module holds those facts once, as plain data, so that
none of these readers has to import a converter (and its parser, scipy, multiprocessing) to learn
a class name. It imports nothing heavier than the layouts, and must stay that way.

Prepared datasets and checkpoints store class names and joint orders, so their wording and order
must never change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from cascade_cli.errors import UserError
from cascade_cli.layouts import KINECT_V1_20, NTU25, PENN13, Layout


@dataclass(frozen=True)
class JointOrder:
    """One order a converter can write a dataset's joints in: joint k of `layout` is joint `source[k]`
    of the raw files."""
    source: tuple[int, ...]
    layout: Layout


@dataclass(frozen=True)
class KnownDataset:
    """What cascade knows about one dataset before preparing it."""
    name: str  # the prepared dataset's name, as its manifest writes it
    title: str
    layout: Layout  # the joints in the order of the raw files
    persons: int  # most persons in one clip
    class_names: tuple[str, ...]  # label k (0-based) is class_names[k]
    protocols: Mapping[str, str]  # protocol name -> one-line description
    confidence: bool  # whether clips carry a per-joint confidence
    two_person_classes: tuple[int, ...] = ()  # 0-based labels of the mutual (two-person) actions
    paper_presets: Mapping[str, str] = field(default_factory=dict)  # protocol -> stem of its Table-1 presets
    joint_orders: Mapping[str, JointOrder] = field(default_factory=dict)  # named orders; empty: the files' only

    def __post_init__(self):
        # Every reader shares these objects: hand out read-only mappings.
        for mapping in ("protocols", "paper_presets", "joint_orders"):
            object.__setattr__(self, mapping, MappingProxyType(dict(getattr(self, mapping))))
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"dataset {self.name}: class names are not unique")
        if unknown := sorted(set(self.paper_presets) - set(self.protocols)):
            raise ValueError(f"dataset {self.name}: paper presets for unknown protocols {unknown}")
        if not all(0 <= label < self.num_classes for label in self.two_person_classes):
            raise ValueError(f"dataset {self.name}: two-person classes outside 0..{self.num_classes - 1}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def joint_order(self, order: str) -> JointOrder:
        if order not in self.joint_orders:
            raise UserError(f"unknown joint order '{order}' for {self.name}; "
                            f"known joint orders: {', '.join(self.joint_orders) or 'none'}")
        return self.joint_orders[order]


NTU60 = KnownDataset(
    name="ntu60", title="NTU RGB+D 60", layout=NTU25, persons=2,
    # Official class names (NTU-off README "Action Classes", current wording); A1..A60 are NTU60.
    class_names=(
        "drink water", "eat meal/snack", "brushing teeth", "brushing hair", "drop", "pickup", "throw",
        "sitting down", "standing up (from sitting position)", "clapping", "reading", "writing", "tear up paper",
        "wear jacket", "take off jacket", "wear a shoe", "take off a shoe", "wear on glasses", "take off glasses",
        "put on a hat/cap", "take off a hat/cap", "cheer up", "hand waving", "kicking something",
        "reach into pocket", "hopping (one foot jumping)", "jump up", "make a phone call/answer phone",
        "playing with phone/tablet", "typing on a keyboard", "pointing to something with finger",
        "taking a selfie", "check time (from watch)", "rub two hands together", "nod head/bow", "shake head",
        "wipe face", "salute", "put the palms together", "cross hands in front (say stop)", "sneeze/cough",
        "staggering", "falling", "touch head (headache)", "touch chest (stomachache/heart pain)",
        "touch back (backache)", "touch neck (neckache)", "nausea or vomiting condition",
        "use a fan (with hand or paper)/feeling warm", "punching/slapping other person", "kicking other person",
        "pushing other person", "pat on back of other person", "point finger at the other person",
        "hugging other person", "giving something to other person", "touch other person's pocket",
        "handshaking", "walking towards each other", "walking apart from each other",
    ),
    protocols={"xsub": "cross-subject: the 20 training performers of the standard list train, "
                       "the other performers of 1-40 test",
               "xview": "cross-view: cameras 2 and 3 train, camera 1 test"},
    confidence=False,
    two_person_classes=tuple(range(49, 60)),  # A50-A60
    paper_presets={"xsub": "ntu60_xsub", "xview": "ntu60_xview"},
)
NTU120 = KnownDataset(
    name="ntu120", title="NTU RGB+D 120", layout=NTU25, persons=2,
    # NTU120 keeps NTU60's A1..A60 and adds A61..A120.
    class_names=NTU60.class_names + (
        "put on headphone", "take off headphone", "shoot at the basket", "bounce ball", "tennis bat swing",
        "juggling table tennis balls", "hush (quite)", "flick hair", "thumb up", "thumb down", "make ok sign",
        "make victory sign", "staple book", "counting money", "cutting nails", "cutting paper (using scissors)",
        "snapping fingers", "open bottle", "sniff (smell)", "squat down", "toss a coin", "fold paper",
        "ball up paper", "play magic cube", "apply cream on face", "apply cream on hand back", "put on bag",
        "take off bag", "put something into a bag", "take something out of a bag", "open a box",
        "move heavy objects", "shake fist", "throw up cap/hat", "hands up (both hands)", "cross arms",
        "arm circles", "arm swings", "running on the spot", "butt kicks (kick backward)", "cross toe touch",
        "side kick", "yawn", "stretch oneself", "blow nose", "hit other person with something",
        "wield knife towards other person", "knock over other person (hit with body)", "grab other person's stuff",
        "shoot at other person with a gun", "step on foot", "high-five", "cheers and drink",
        "carry something with other person", "take a photo of other person", "follow other person",
        "whisper in other person's ear", "exchange things with other person",
        "support somebody with one's hand (someone is sick, help him to walk)",
        "finger-guessing game (playing rock-paper-scissors)",
    ),
    protocols={"xsub": "cross-subject: the 53 training performers of the standard list train, "
                       "the other performers of 1-106 test",
               "xset": "cross-setup: even setups train, odd setups test (1-32)"},
    confidence=False,
    two_person_classes=NTU60.two_person_classes + tuple(range(105, 120)),  # and A106-A120
)
PENN_ACTION = KnownDataset(
    name="penn_action", title="Penn Action", layout=PENN13, persons=1,
    # The `action` strings of the .mat files; alphabetical = file order = CascadeFormer's label index.
    class_names=(
        "baseball_pitch", "baseball_swing", "bench_press", "bowl", "clean_and_jerk", "golf_swing", "jump_rope",
        "jumping_jacks", "pullup", "pushup", "situp", "squat", "strum_guitar", "tennis_forehand", "tennis_serve",
    ),
    protocols={"official": "the official train flag of each file (1,258 train / 1,068 test on the full set)"},
    confidence=True,  # the per-joint visibility flag
    paper_presets={"official": "penn_action"},
)
# "official" is SkateFormer's "partition" order (left arm, right arm, left leg, right leg, then Spine,
# ShoulderCenter, HipCenter, Head): the joint order of every released N-UCLA CascadeFormer checkpoint.
NUCLA_OFFICIAL_ORDER = (*range(4, 20), 1, 2, 0, 3)
NW_UCLA = KnownDataset(
    name="nw_ucla", title="Northwestern-UCLA Multiview Action 3D (N-UCLA)", layout=KINECT_V1_20, persons=1,
    # JSON label 1..10 in this order; action ids a07 and a10 do not occur in the data.
    class_names=("pick up with one hand", "pick up with two hands", "drop trash", "walk around", "sit down",
                 "stand up", "donning", "doffing", "throw", "carry"),
    protocols={"cross_view": "train on views 1 and 2, test on view 3 (1,020 / 464 on the full set)"},
    confidence=False,
    paper_presets={"cross_view": "n_ucla"},
    joint_orders={"kinect": JointOrder(tuple(range(KINECT_V1_20.num_joints)), KINECT_V1_20),
                  "official": JointOrder(NUCLA_OFFICIAL_ORDER,
                                         KINECT_V1_20.reordered(NUCLA_OFFICIAL_ORDER, name="kinect_v1_20_official"))},
)
SYNTHETIC = KnownDataset(
    name="synthetic", title="synthetic demo actions", layout=NTU25, persons=2,
    class_names=("wave", "arm_raise", "clap", "squat", "jump", "kick", "bow", "turn_around", "walk", "handshake"),
    protocols={"xsub": "cross-subject: odd subject ids (1, 3, ..., 19) train, even ids test"},
    confidence=False,
)

KNOWN_DATASETS: dict[str, KnownDataset] = {dataset.name: dataset for dataset in
                                           (NTU60, NTU120, PENN_ACTION, NW_UCLA, SYNTHETIC)}


def known_dataset(name: str) -> KnownDataset:
    if name not in KNOWN_DATASETS:
        raise UserError(f"unknown dataset '{name}'; known datasets: {', '.join(sorted(KNOWN_DATASETS))}")
    return KNOWN_DATASETS[name]


def two_person_classes(name: str, num_classes: int) -> list[int] | None:
    """The 0-based two-person classes of a prepared dataset, or None where there is no such split.

    Name and class count must both match a known dataset that has two-person classes: a custom
    dataset that happens to have 60 classes has no such split, and the labels of an NTU subset with
    fewer classes no longer mean A1..A120.
    """
    dataset = KNOWN_DATASETS.get(name)
    if dataset is None or not dataset.two_person_classes or num_classes != dataset.num_classes:
        return None
    return list(dataset.two_person_classes)


def paper_preset_stem(name: str, protocol: str) -> str | None:
    """The stem of the paper's Table-1 presets (`table1/<stem>-<variant>`) for a dataset and protocol, or
    None where the paper has none (other protocols, NTU120, unknown and custom datasets)."""
    dataset = KNOWN_DATASETS.get(name)
    return dataset.paper_presets.get(protocol) if dataset is not None else None


def paper_preset(name: str, protocol: str, variant: str) -> str | None:
    """The preset name of one Table-1 model (variant "1.0", "1.1" or "1.2"), or None as paper_preset_stem."""
    stem = paper_preset_stem(name, protocol)
    return f"table1/{stem}-{variant}" if stem is not None else None
