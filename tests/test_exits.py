"""Exit heads after T1 and the real cascade: clips that stay get the full model's predictions."""

import numpy as np
import pytest
import torch

from cascade_cli import lifecycle
from cascade_cli.data.format import open_dataset
from cascade_cli.data.pipeline import ClipDataset, collate_clips
from cascade_cli.exits.fit import fit_exit_heads
from cascade_cli.inference import load_classifier, score_indices
from cascade_cli.inference.cascade import cascade_logits
from cascade_cli.model import padding_mask
from tests.conftest import TINY


@pytest.fixture(scope="module")
def with_exits(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("exits")
    overrides = [*TINY, "pretrain.epochs=2", "finetune.epochs=6", "model.d_model=48", "data.frames=0",
                 "model.max_frames=160"]
    lifecycle.pretrain(root / "pre", data=tiny_dataset, overrides=overrides)
    lifecycle.finetune(root / "ft", pretrained=root / "pre")
    fit_exit_heads(root / "ft", root / "exits.safetensors")
    return root


def test_a_checkpoint_with_exit_heads_scores_like_the_one_without(with_exits, tiny_dataset):
    plain, exits = load_classifier(with_exits / "ft"), load_classifier(with_exits / "exits.safetensors")
    assert not hasattr(plain.model, "exits") and "t1" in exits.model.exits
    ds = open_dataset(tiny_dataset)
    test = ds.split_indices("xsub", "test")
    a, b = score_indices(plain, ds, test), score_indices(exits, ds, test)
    np.testing.assert_array_equal(a.logits, b.logits)  # the main path is untouched by the exit head


def test_the_cascade_keeps_the_full_models_predictions_for_clips_that_stay(with_exits, tiny_dataset):
    classifier = load_classifier(with_exits / "exits.safetensors")
    ds = open_dataset(tiny_dataset)
    test = ds.split_indices("xsub", "test")
    items = ClipDataset(ds, test, classifier.config.data, train=False, seed=0)
    batch = collate_clips([items[i] for i in range(len(items))])  # variable lengths: padding masked
    pad = padding_mask(batch.lengths, batch.x.shape[1])
    with torch.no_grad():
        full = classifier.model(batch.x, pad)
        early = classifier.model.exits["t1"](classifier.model.t1(batch.x, pad), pad)
    confidence = early.softmax(-1).max(-1).values
    threshold = float(confidence.median())  # about half the clips leave
    logits, left = cascade_logits(classifier.model, batch.x, pad, threshold)
    assert 0 < left.sum() < len(left)
    stay = ~left
    assert torch.equal(logits[stay].argmax(-1), full[stay].argmax(-1))
    torch.testing.assert_close(logits[stay], full[stay], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[left], early[left])
    never, none_left = cascade_logits(classifier.model, batch.x, pad, 1.01)  # above any probability
    assert not none_left.any()
    torch.testing.assert_close(never, full, atol=1e-5, rtol=1e-5)
    # The fitted exit is far better than chance on the test clips.
    assert (early.argmax(-1) == batch.labels).float().mean() > 3 / len(ds.class_names)
