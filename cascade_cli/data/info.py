"""What is in a prepared dataset, and is it intact: the facts behind `cascade data info`."""

from __future__ import annotations

import numpy as np

from cascade_cli.data.format import SPLIT_CODES, PreparedDataset


def describe(ds: PreparedDataset, verify: bool = True) -> dict:
    """Classes with their clip counts per protocol split, clip-length statistics and integrity problems."""
    classes = []
    for label, name in enumerate(ds.class_names):
        row = {"label": label, "name": name, "clips": int((ds.labels == label).sum())}
        for protocol in ds.protocols:
            for part in SPLIT_CODES:
                row[f"{protocol}/{part}"] = int((ds.labels[ds.split_indices(protocol, part)] == label).sum())
        classes.append(row)
    lengths = ds.lengths.astype(np.int64)
    return {
        "name": ds.name, "path": str(ds.path), "layout": ds.layout.name, "joints": ds.layout.num_joints,
        "coords": ds.layout.coords, "persons": ds.persons, "confidence": ds.has_confidence,
        "clips": ds.num_clips, "frames": int(lengths.sum()),
        "lengths": {"min": int(lengths.min()), "median": float(np.median(lengths)), "mean": float(lengths.mean()),
                    "max": int(lengths.max())},
        "two_person_clips": int((ds.meta("persons") > 1).sum()),
        "protocols": {name: {**spec["counts"], "description": spec.get("description", "")}
                      for name, spec in ds.protocols.items()},
        "classes": classes,
        "problems": ds.verify() if verify else None,
    }
