"""`cascade ablate`: the arms of a paper ablation as one resumable study, compared with the paper.

A study is a list of arm presets (named tableN/...). Each arm runs pretrain -> finetune -> evaluate
with the same seeds and data; arms whose pretraining configuration is identical (e.g. the freezing
arms) share one pretraining run, keyed by a hash of everything that affects it. Finished arms are
skipped on a re-run and a failing arm is recorded without stopping the others.

    STUDY/study.json                     what was asked (study, budget, dataset, seeds)
    STUDY/pretrain/<hash>/               shared pretraining runs
    STUDY/arms/<arm>/seed-<s>/finetune/  finetuning run, with eval_test.json
    STUDY/arms/<arm>/seed-<s>/result.json (or error.json)
    STUDY/results.{json,csv,md}
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cascade_cli.atomic import write_text
from cascade_cli.config import Config, load_config, preset_info, to_dict
from cascade_cli.data.format import open_dataset
from cascade_cli.data.registry import KNOWN_DATASETS
from cascade_cli.errors import UserError
from cascade_cli.locking import directory_lock
from cascade_cli.metrics import mean_std
from cascade_cli.progress import Reporter


@dataclass(frozen=True)
class Study:
    table: str
    title: str
    arms: tuple[str, ...]  # preset names; the variant study picks its dataset's table-1 presets


STUDIES = {
    "variant": Study("1", "CascadeFormer variants", tuple(f"table1/penn_action-{v}" for v in ("1.0", "1.1", "1.2"))),
    "pretrain-epochs": Study("6", "Pretraining epochs (NTU60 X-Sub, CF 1.0)",
                             tuple(f"table6/ntu60_xsub-1.0-pretrain{e}" for e in (1, 100, 200))),
    "masking": Study("7", "Pretraining masking (Penn Action, CF 1.0)",
                     tuple(f"table7/penn_action-1.0-{a}" for a in ("joint_slots", "frames", "none"))),
    "representation": Study("8", "Input representation (Penn Action, CF 1.0)",
                            tuple(f"table8/penn_action-1.0-{a}" for a in ("joints", "bone_sub", "bone_concat",
                                                                            "bone_param"))),
    "decoder": Study("9", "Pretraining decoder (Penn Action, CF 1.0)",
                     tuple(f"table9/penn_action-1.0-{a}" for a in ("linear", "mlp", "mlp_residual"))),
    "freezing": Study("10", "T1 during finetuning (Penn Action, CF 1.0)",
                      tuple(f"table10/penn_action-1.0-{a}" for a in ("full", "frozen", "last_layer"))),
    # Not a paper table: the field's four input streams, each trained alone, then fused (`fused` row).
    "streams": Study("streams", "Input streams and their fusion (Penn Action, CF 1.0, fast recipe)",
                     tuple(f"streams/penn_action-{s}" for s in ("joints", "bone_sub", "joint_motion", "bone_motion"))),
}
FUSED = "fused"  # the streams study's row of the ensemble of its arms
# quick: a small model and few epochs, minutes on a CPU; paper: the published recipe.
BUDGETS = ("quick", "paper")
# A dataset the recipe was not written for gets the demo's dataset-agnostic pipeline.
GENERIC_DATA = "demo"


def study_arms(name: str, dataset_name: str | None = None, protocol: str = "") -> list[str]:
    if name not in STUDIES:
        raise UserError(f"unknown study '{name}'; choose one of {', '.join(STUDIES)}")
    arms = list(STUDIES[name].arms)
    if name == "variant" and dataset_name in KNOWN_DATASETS:
        stems = KNOWN_DATASETS[dataset_name].paper_presets
        stem = stems.get(protocol) if protocol else next(iter(stems.values()), None)
        if stem is not None:
            return [arm.replace("penn_action", stem) for arm in arms]
    return arms


def quick_budget(cfg: Config, study: str, num_joints: int) -> None:
    """Scale a paper recipe down to minutes on a CPU, keeping what the arms differ in."""
    m = cfg.model
    m.t1_heads, m.t2_heads, m.spatial_heads, m.t1_layers, m.t2_layers, m.ffn_dim = 4, 0, 0, 2, 0, 128
    m.d_model = 64
    if m.variant == "1.2" and m.spatial_form == "paper":  # every joint needs d/J channels, divisible by heads
        m.spatial_heads = 1
        m.d_model = num_joints * math.ceil(64 / num_joints)
        m.t1_heads = next(h for h in (4, 2, 1) if m.d_model % h == 0)
    cfg.data.frames = 32 if cfg.data.frames in (0, 64) else min(cfg.data.frames, 32)
    cfg.data.repeat = min(cfg.data.repeat, 2)
    m.max_frames = max(64, cfg.data.frames)
    if study == "pretrain-epochs":  # 1 / 100 / 200 -> 1 / 5 / 10: the arms must stay distinct
        cfg.pretrain.epochs = max(1, math.ceil(cfg.pretrain.epochs / 20))
    else:
        cfg.pretrain.epochs = min(cfg.pretrain.epochs, 8)
    cfg.finetune.epochs = min(cfg.finetune.epochs, 15)
    for stage in (cfg.pretrain, cfg.finetune):
        stage.batch_size = 32
        stage.optim.lr = 1e-3
        stage.optim.schedule_unit = "step"


def arm_config(arm: str, study: str, budget: str, dataset_path: Path, seed: int,
               overrides: tuple[str, ...] = ()) -> tuple[Config, str]:
    """The configuration of one arm, and a note when it is not comparable with the paper."""
    info = preset_info(arm)
    ds = open_dataset(dataset_path)
    cfg = load_config(arm)
    notes = []
    if info.get("dataset") != ds.name:
        generic = load_config(GENERIC_DATA).data
        cfg.data = dataclasses.replace(generic, representation=cfg.data.representation,
                                       bone_param_clamp=cfg.data.bone_param_clamp)
        notes.append(f"dataset {ds.name}, not {info.get('dataset')}")
    cfg.data.path = str(dataset_path)
    if not cfg.data.protocol or cfg.data.protocol not in ds.protocols:
        cfg.data.protocol = next(iter(ds.protocols))
    if budget == "quick":
        quick_budget(cfg, study, ds.layout.num_joints)
        notes.append("quick budget")
    cfg = load_config(None, overrides, base=to_dict(cfg)) if overrides else cfg
    cfg.seed = seed
    return cfg, "; ".join(notes)


def _pretrain_key(cfg: Config) -> str:
    """Everything that changes pretraining; arms with the same key share the pretrained T1."""
    relevant = {k: v for k, v in to_dict(cfg).items() if k in ("seed", "data", "pretrain")}
    # Keys added after studies existed count only when set, so old studies keep their shared runs.
    relevant["pretrain"] = {k: v for k, v in relevant["pretrain"].items()
                            if not (k in ("keep_last", "patience") and v == 0)}
    relevant["data"] = {k: v for k, v in relevant["data"].items()
                        if not (k in ("classes", "exclude_classes") and not v)}
    relevant["model"] = {k: v for k, v in to_dict(cfg.model).items()
                         if not k.startswith(("t2_", "fusion", "head"))}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


def _run_arm(cfg: Config, arm_dir: Path, study_dir: Path, reporter: Reporter) -> dict:
    """Pretrain (or reuse a shared pretraining), finetune, evaluate. The wall time counts the
    pretraining too, shared or not, so arms compare at their full cost."""
    from cascade_cli.lifecycle import run_stages  # here, not at the top: `cascade --help` needs no torch

    pre_dir = study_dir / "pretrain" / _pretrain_key(cfg)
    result = run_stages(cfg, pre_dir, arm_dir / "finetune", reporter,
                        hint="the study's code or settings changed; use another study directory")
    report = result.report
    return {"top1": report["top1"], "top5": report["top5"], "clips": report["clips"], "pretrain_dir": str(pre_dir),
            "wall_s": sum(result.seconds.values())}


def run_study(name: str, study_dir: str | Path, *, dataset: str | Path | None = None, budget: str = "quick",
              seeds: int = 1, base_seed: int = 42, device: str | None = None, overrides: tuple[str, ...] = (),
              reporter: Reporter | None = None) -> list[dict]:
    reporter = reporter or Reporter(quiet=True)
    if budget not in BUDGETS:
        raise UserError(f"--budget {budget!r}: use quick or paper")
    study_dir = Path(study_dir)
    arms = study_arms(name)
    if dataset is None:
        default = preset_info(arms[0]).get("dataset", "")
        dataset = Path("data") / default
        if not (dataset / "dataset.yaml").is_file():
            raise UserError(f"study '{name}' runs on {default} by default, expected prepared at {dataset}; "
                            f"prepare it there or pass --dataset DIR")
    dataset = Path(dataset)
    ds = open_dataset(dataset)
    arms = study_arms(name, ds.name)
    asked = {"study": name, "budget": budget, "dataset": str(dataset), "seeds": seeds, "base_seed": base_seed,
             "overrides": list(overrides)}
    study_file = study_dir / "study.json"
    if study_file.is_file():
        previous = json.loads(study_file.read_text())
        if previous != asked:
            raise UserError(f"{study_dir} holds a study with other settings ({previous}); use another directory")
    with directory_lock(study_dir, "study directory"):
        write_text(study_file, json.dumps(asked, indent=2))
        _run_arms(name, arms, study_dir, dataset, budget, seeds, base_seed, device, overrides, reporter)
        if name == "streams":
            _fuse_arms(arms, study_dir, seeds, device, reporter)
        rows = collect_results(study_dir)
        write_results(study_dir, rows)
    return rows


def _run_arms(name: str, arms: list[str], study_dir: Path, dataset: Path, budget: str, seeds: int, base_seed: int,
              device: str | None, overrides: tuple[str, ...], reporter: Reporter) -> None:
    for arm in arms:
        for s in range(seeds):
            arm_dir = study_dir / "arms" / arm.split("/")[-1] / f"seed-{s}"
            if (arm_dir / "result.json").is_file():
                continue
            reporter.info(f"[{name}] arm {arm} seed {s}")
            try:
                cfg, note = arm_config(arm, name, budget, dataset, base_seed + s, overrides)
                if device:
                    cfg.device = device
                result = _run_arm(cfg, arm_dir, study_dir, reporter)
            except Exception as exc:  # one arm's failure must not cost the others
                write_text(arm_dir / "error.json", json.dumps({"error": f"{type(exc).__name__}: {exc}",
                                                              "traceback": traceback.format_exc()}, indent=2))
                reporter.warn(f"arm {arm} seed {s} failed: {exc}")
                continue
            (arm_dir / "error.json").unlink(missing_ok=True)
            write_text(arm_dir / "result.json", json.dumps({"arm": arm, "seed": s, "note": note, **result}, indent=2))


def _fuse_arms(arms: list[str], study_dir: Path, seeds: int, device: str | None, reporter: Reporter) -> None:
    """For every seed whose arms all finished: their ensemble (`cascade evaluate --ensemble`), the
    fusion weights chosen on the arms' shared validation split."""
    from cascade_cli.ensemble import ensemble_report  # torch, only when a study runs

    for s in range(seeds):
        runs = [study_dir / "arms" / arm.split("/")[-1] / f"seed-{s}" for arm in arms]
        out = study_dir / "arms" / FUSED / f"seed-{s}" / "result.json"
        if out.is_file() or not all((run / "result.json").is_file() for run in runs):
            continue
        reporter.info(f"[streams] fusing the {len(runs)} streams of seed {s}")
        report = ensemble_report([run / "finetune" for run in runs], device=device,
                                 out=out.with_name("eval_test_ensemble.json"))
        wall = sum(json.loads((run / "result.json").read_text())["wall_s"] for run in runs)
        write_text(out, json.dumps({"arm": FUSED, "seed": s, "note": json.loads((runs[0] / "result.json").read_text())["note"],
                                    "top1": report["top1"], "top5": report["top5"], "clips": report["clips"],
                                    "weights": {arm.split("-")[-1]: r["weight"] for arm, r in zip(arms, report["ensemble"])},
                                    "wall_s": wall}, indent=2))


def collect_results(study_dir: Path) -> list[dict]:
    asked = json.loads((study_dir / "study.json").read_text())
    ds_name = open_dataset(asked["dataset"]).name if Path(asked["dataset"]).exists() else None
    rows = []
    arms = study_arms(asked["study"], ds_name)
    for arm in arms + ([FUSED] if asked["study"] == "streams" else []):
        # The fused row stands beside the paper's joint-only number, as the field reports ensembles.
        info = preset_info(arm) if arm != FUSED else {"arm": FUSED, "paper_top1": preset_info(arms[0]).get("paper_top1")}
        results, errors = [], []
        for s in range(asked["seeds"]):
            arm_dir = study_dir / "arms" / arm.split("/")[-1] / f"seed-{s}"
            if (arm_dir / "result.json").is_file():
                results.append(json.loads((arm_dir / "result.json").read_text()))
            elif (arm_dir / "error.json").is_file():
                errors.append(json.loads((arm_dir / "error.json").read_text())["error"])
        top1 = [100 * r["top1"] for r in results]
        mean, std = mean_std(top1) if top1 else (None, None)
        paper = info.get("paper_top1")
        note = results[0]["note"] if results else ""
        rows.append({
            "arm": info.get("arm", arm), "preset": arm, "top1": mean,
            "top1_std": std if len(top1) > 1 else None, "seeds_done": len(top1),
            "paper_top1": paper, "delta": None if mean is None or paper is None else mean - paper,
            "comparable": not note, "note": note, "wall_s": float(sum(r["wall_s"] for r in results)),
            "status": "ok" if len(results) == asked["seeds"] else ("failed: " + errors[0] if errors else "missing"),
        })
    return rows


def _fmt(value, spec=".2f", empty="-"):
    return empty if value is None else format(value, spec)


def markdown_table(rows: list[dict], title: str) -> str:
    lines = [f"### {title}", "", "| arm | ours top-1 (%) | paper (%) | delta | wall time | notes |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ours = _fmt(r["top1"]) + (f" ± {r['top1_std']:.2f}" if r["top1_std"] is not None else "")
        delta = _fmt(r["delta"], "+.2f") + ("" if r["comparable"] or r["delta"] is None else " (not comparable)")
        notes = "; ".join(x for x in (r["note"], "" if r["status"] == "ok" else r["status"]) if x)
        lines.append(f"| {r['arm']} | {ours} | {_fmt(r['paper_top1'])} | {delta} | {r['wall_s']:.0f} s | {notes} |")
    return "\n".join(lines) + "\n"


def write_results(study_dir: Path, rows: list[dict]) -> None:
    asked = json.loads((study_dir / "study.json").read_text())
    write_text(study_dir / "results.json", json.dumps({"study": asked, "rows": rows}, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(study_dir / "results.csv", buffer.getvalue())
    write_text(study_dir / "results.md", markdown_table(rows, study_title(asked)))


def load_study(study_dir: str | Path) -> tuple[dict, list[dict]]:
    path = Path(study_dir) / "results.json"
    if not path.is_file():
        raise UserError(f"{study_dir}: no results.json (run `cascade ablate` into it first)")
    data = json.loads(path.read_text())
    return data["study"], data["rows"]


def study_title(asked: dict) -> str:
    study = STUDIES[asked["study"]]
    label = f"Table {study.table}: " if study.table.isdigit() else ""
    return f"{label}{study.title}, budget {asked['budget']}, {asked['seeds']} seed(s)"


def render_report(study_dirs: list[Path], out_dir: Path) -> tuple[Path, Path]:
    """Paper-style Markdown tables of finished studies and a bar chart of ours vs the paper."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = [load_study(d) for d in study_dirs]
    markdown = "\n".join(markdown_table(rows, study_title(asked)) for asked, rows in studies)
    fig, axes = plt.subplots(1, len(studies), figsize=(4.5 * len(studies), 4), squeeze=False)
    for ax, (asked, rows) in zip(axes[0], studies):
        x = np.arange(len(rows))
        ours = [r["top1"] or 0.0 for r in rows]
        paper = [r["paper_top1"] or 0.0 for r in rows]
        ax.bar(x - 0.2, ours, 0.4, label="ours")
        ax.bar(x + 0.2, paper, 0.4, label="paper")
        ax.set_xticks(x, [r["arm"] for r in rows], rotation=20)
        ax.set_ylabel("test top-1 (%)")
        table = STUDIES[asked["study"]].table
        ax.set_title(f"{'Table ' * table.isdigit()}{table} ({asked['budget']})", fontsize=10)
        ax.set_ylim(0, 100)
        ax.legend(loc="lower right")
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    png, md = out_dir / "report.png", out_dir / "report.md"
    tmp = out_dir / ".report.tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(png)
    write_text(md, markdown + f"\n![ours vs paper]({png.name})\n")
    return md, png

