"""The README's "Library use" examples run as written, on a tiny dataset and model."""

import re
from pathlib import Path

import numpy as np
import yaml

README = Path(__file__).resolve().parents[1] / "README.md"


def library_examples() -> list[str]:
    section = README.read_text().split("## Library use", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_library_examples_run(tmp_path, monkeypatch, capsys):
    from cascade_cli.data.format import open_dataset
    from cascade_cli.data.synthetic import make_synthetic

    inference, training = library_examples()
    monkeypatch.chdir(tmp_path)
    data = make_synthetic(Path("data/synthetic"), clips_per_class=8, seed=0)
    np.save("clip.npy", open_dataset(data).clip(0)[:, 0])
    # The training example: pretrain, finetune (inheriting the pretraining config), an amended resume.
    exec(compile(training.replace('preset="demo"', 'preset="demo", overrides=["pretrain.epochs=1"]', 1),
                 "README", "exec"), {})
    runs = Path("runs")
    assert (runs / "ft" / "checkpoints" / "best.safetensors").is_file()
    saved = yaml.safe_load((runs / "ft" / "config.yaml").read_text())
    assert saved["model"]["d_model"] == 64 and saved["finetune"]["epochs"] == 8  # inherited, then amended
    assert saved["history"][0]["changes"] == {"finetune.epochs": [5, 8]}
    # The inference example, on the run just trained.
    capsys.readouterr()
    exec(compile(inference, "README", "exec"), {})
    scored, predicted = capsys.readouterr().out.strip().splitlines()
    accuracy, shape = scored.split(" ", 1)
    test_clips = len(open_dataset(data).split_indices("xsub", "test"))
    assert 0.0 <= float(accuracy) <= 1.0 and shape == f"({test_clips}, 64)"
    assert predicted in open_dataset(data).class_names
