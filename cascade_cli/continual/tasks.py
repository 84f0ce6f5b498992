"""Which classes each task of a class-incremental run holds.

A class order lists every class once; task t takes the next slice of it. Orders: `sorted` (label
order), `random:SEED`, a text file (one class name or 0-based index per line), and `charon-ntu60`,
the order of the CHARON code's Split NTU-60 (reference continual_learning.md §1): its labels are
remapped by `new = XDER_PERM[old]` and task t holds new labels 10t..10t+9, so task 1 holds A028,
A019, A016, A043, A055, A060, A007, A030, A035 and A054.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cascade_cli.data.registry import NTU60
from cascade_cli.errors import UserError

XDER_PERM = (17, 39, 42, 41, 48, 37, 6, 49, 51, 38, 22, 40, 29, 34, 32, 2, 54, 36, 1, 57, 13, 10, 16, 15, 12, 24, 30,
             0, 23, 7, 43, 52, 28, 11, 8, 45, 58, 35, 59, 56, 18, 53, 3, 31, 55, 14, 20, 50, 27, 25, 33, 47, 26, 9, 4,
             44, 46, 19, 21, 5)


def class_order(spec: str, class_names: Sequence[str]) -> list[int]:
    """Every class index once, in the order tasks take them (see the module docstring)."""
    n = len(class_names)
    if spec == "sorted":
        return list(range(n))
    if spec.startswith("random:"):
        seed = spec.removeprefix("random:")
        if not seed.isdigit():
            raise UserError(f"--class-order {spec!r}: random:SEED takes a non-negative integer seed")
        return [int(c) for c in np.random.default_rng(int(seed)).permutation(n)]
    if spec == "charon-ntu60":
        if list(class_names[:NTU60.num_classes]) != list(NTU60.class_names) or n != NTU60.num_classes:
            raise UserError("--class-order charon-ntu60 is the order of NTU RGB+D 60's 60 classes; this dataset "
                            "has other classes")
        return [int(old) for old in np.argsort(XDER_PERM)]
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"--class-order {spec!r}: use sorted, random:SEED, charon-ntu60 or a file with one class "
                        "name or index per line")
    order = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        entry = line.strip()
        if not entry:
            continue
        if entry in class_names:
            order.append(list(class_names).index(entry))
        elif entry.isdigit() and int(entry) < n:
            order.append(int(entry))
        else:
            raise UserError(f"{path} line {line_no}: {entry!r} is not a class name or an index below {n}")
    if sorted(order) != list(range(n)):
        missing = sorted(set(range(n)) - set(order))
        repeated = sorted({c for c in order if order.count(c) > 1})
        raise UserError(f"{path}: a class order lists every class once; missing {[class_names[c] for c in missing]}, "
                        f"repeated {[class_names[c] for c in repeated]}")
    return order


def split_tasks(order: Sequence[int], tasks: int) -> list[list[int]]:
    """The order cut into `tasks` consecutive slices of equal size."""
    if tasks < 1 or len(order) % tasks:
        raise UserError(f"--tasks {tasks}: the {len(order)} classes must split into tasks of equal size "
                        f"(divisors: {', '.join(str(t) for t in range(1, len(order) + 1) if len(order) % t == 0)})")
    size = len(order) // tasks
    return [list(order[t * size:(t + 1) * size]) for t in range(tasks)]
