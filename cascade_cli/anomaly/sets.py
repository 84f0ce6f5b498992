"""Which classes are abnormal: named by the user, or the NTU-AD sets of the CascadeFormer-Agent.

NTU-AD relabels NTU RGB+D 60 into 48 normal and 12 abnormal classes (reference anomaly_agent.md §1).
The authors' README names the *intended* set; their code, through a mis-ordered class-name list,
uses another (*official*): A59 and A60 count as abnormal, A54 and A57 as normal. The intended set is
the default; `ntu-ad-official` reproduces the official runs.
"""

from __future__ import annotations

from typing import Sequence

from cascade_cli.data.registry import NTU60
from cascade_cli.errors import UserError

# 0-based NTU60 labels: A42-A48, A50-A52, A54, A57 (intended); A54, A57 -> A59, A60 (official).
ABNORMAL_SETS = {
    "ntu-ad": (41, 42, 43, 44, 45, 46, 47, 49, 50, 51, 53, 56),
    "ntu-ad-official": (41, 42, 43, 44, 45, 46, 47, 49, 50, 51, 58, 59),
}


def named_set(name: str, class_names: Sequence[str]) -> list[int]:
    """An NTU-AD set; the dataset must have NTU60's classes first (NTU60 or NTU120)."""
    if name not in ABNORMAL_SETS:
        raise UserError(f"--abnormal-set {name!r}: use one of {', '.join(ABNORMAL_SETS)}")
    if list(class_names[:NTU60.num_classes]) != list(NTU60.class_names):
        raise UserError(f"--abnormal-set {name}: the NTU-AD sets are NTU RGB+D 60 classes, and this dataset's "
                        "classes are others; name the abnormal classes with --abnormal")
    return list(ABNORMAL_SETS[name])


def parse_classes(text: str, class_names: Sequence[str], option: str = "--abnormal") -> list[int]:
    """Comma-separated class names or 0-based indices -> sorted indices; a bad entry is one line that
    lists the valid names."""
    chosen = set()
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        if entry in class_names:
            chosen.add(list(class_names).index(entry))
        elif entry.isdigit() and int(entry) < len(class_names):
            chosen.add(int(entry))
        else:
            raise UserError(f"{option}: {entry!r} is not a class of this dataset; its classes are "
                            f"{', '.join(class_names)} (or 0-based indices below {len(class_names)})")
    return sorted(chosen)


def check_split(abnormal: Sequence[int], num_classes: int) -> None:
    if not abnormal:
        raise UserError("no abnormal class: name some with --abnormal or --abnormal-set, or use a classifier "
                        "trained on a class subset (data.classes / data.exclude_classes), whose held-out classes "
                        "are the unknown actions to detect")
    if len(set(abnormal)) >= num_classes:
        raise UserError("every class is abnormal: nothing would be normal to build the bank from")
