"""`cascade anomaly fit / tune / evaluate / score`: alerts from a trained classifier, offline."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cascade_cli.anomaly.policy import DEFAULT_COSTS, RULES
from cascade_cli.anomaly.sets import ABNORMAL_SETS
from cascade_cli.anomaly.statistics import STATISTICS
from cascade_cli.cli.common import (DeviceOpt, ExitRule, ExitRuleOpt, GpuOpt, QuietOpt, choice_enum, cli_command,
                                    device_of)
from cascade_cli.progress import Reporter

anomaly_app = typer.Typer(help="Anomaly alerts (the CascadeFormer-Agent, offline): statistics of a frozen classifier "
                               "against a bank of normal clips, and a LOG/ALERT threshold policy tuned for a cost "
                               "matrix on validation data.", no_args_is_help=True)
AbnormalSet = choice_enum("AbnormalSet", ABNORMAL_SETS)
Search = choice_enum("Search", ("direct", "reward-model"))
EvalSplit = choice_enum("EvalSplit", ("test", "val"))
DetectorArg = typer.Argument(..., help="A detector directory (from `cascade anomaly fit`).")
COSTS = ",".join(f"{k}={v:g}" for k, v in DEFAULT_COSTS.items())
RULE_HELP = ", ".join(f"{name} (ALERT if {' OR '.join(stats)})" for name, stats in RULES.items())


@anomaly_app.command("fit")
@cli_command
def fit(
    checkpoint: str = typer.Argument(..., help="Finetuning run directory or checkpoint of the classifier."),
    out: Path = typer.Option(..., "--out", "-o", help="The detector directory to write."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Prepared dataset \\[default: the one trained on]."),
    abnormal: Optional[str] = typer.Option(None, "--abnormal", metavar="CLASSES",
                                           help="Abnormal classes, comma-separated names or 0-based indices."),
    abnormal_set: Optional[AbnormalSet] = typer.Option(None, "--abnormal-set", help="A named set: ntu-ad (the "
                                                       "NTU-AD classes the authors intended) or ntu-ad-official (the "
                                                       "set their code used)."),
    k: int = typer.Option(5, "--k", min=1, help="Neighbours of the kNN distance."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing detector at --out."),
    gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt, quiet: bool = QuietOpt,
) -> None:
    """Fit a detector: the normal bank and the validation statistics of a trained classifier.

    The frozen classifier scores the training split with its test-time transform. Normal classes it
    trained on form the bank; its validation split, and the same share of the training clips of
    classes it never saw, are kept out of the bank to tune thresholds on. Classes it never saw (a
    class subset, data.exclude_classes) are abnormal, together with --abnormal and --abnormal-set.

    Example:  cascade anomaly fit runs/ft --abnormal falling,staggering --out detectors/ft
    """
    from cascade_cli.anomaly.detector import fit_detector

    detector = fit_detector(checkpoint, out, data=data, abnormal=abnormal,
                            abnormal_set=abnormal_set.value if abnormal_set else None, k=k,
                            device=device_of(gpu, device), overwrite=overwrite, reporter=Reporter(quiet))
    m = detector.manifest
    Reporter(quiet).result(f"detector written to {out}: bank of {m['bank_size']} clips, validation "
                           f"{m['validation']['clips']} clips ({m['validation']['abnormal']} abnormal); abnormal "
                           f"classes: {', '.join(m['abnormal_names'])}")


@anomaly_app.command("tune")
@cli_command
def tune(
    detector: Path = DetectorArg,
    rule: str = typer.Option("or2", "--rule", help=f"{RULE_HELP}, or single:STAT with STAT one of "
                             f"{', '.join(STATISTICS)}."),
    costs: str = typer.Option(COSTS, "--costs", help="Reward of each outcome (tp: an abnormal clip alerted, fp: a "
                              "normal one alerted, fn: an abnormal one missed, tn: a normal one logged)."),
    search: Search = typer.Option(Search("direct"), "--search", help="direct: the exact mean cost of every "
                                  "candidate on the validation labels; reward-model: the authors' random-forest "
                                  "search (needs scikit-learn)."),
) -> None:
    """Choose the rule's thresholds on the validation part only, and write policy.yaml.

    Candidates are quantiles of the validation statistics on the authors' grids. The baselines
    (fixed 0.90 quantiles, random levels, always LOG, always ALERT, the class rule) are stored
    beside the tuned policy, so `evaluate` compares them on equal terms.

    Example:  cascade anomaly tune detectors/ft --rule or2 --costs tp=5,fp=-3,fn=-10,tn=0
    """
    from cascade_cli.anomaly.alerts import tune as run_tune
    from cascade_cli.anomaly.detector import open_detector
    from cascade_cli.anomaly.policy import parse_costs

    document = run_tune(open_detector(detector), rule=rule, costs=parse_costs(costs), search=search.value)
    console = Console()
    console.print(f"policy: {document['policy_text']}", markup=False, highlight=False)
    console.print(_policy_table("validation", document["validation"]))


@anomaly_app.command("evaluate")
@cli_command
def evaluate(
    detector: Path = DetectorArg,
    split: EvalSplit = typer.Option(EvalSplit("test"), "--split", help="test (the evaluation) or val (the tuning "
                                    "data, to inspect)."),
    gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt, quiet: bool = QuietOpt,
) -> None:
    """Every policy's accuracy, precision, recall, F1 and mean cost, and every statistic's AUROC.

    Writes evaluation_<split>.json, roc_<split>.png and histograms_<split>.png into the detector
    directory. This is the only command that reads the test split.

    Example:  cascade anomaly evaluate detectors/ft
    """
    from cascade_cli.anomaly.alerts import evaluate as run_evaluate
    from cascade_cli.anomaly.detector import open_detector

    report = run_evaluate(open_detector(detector), split=split.value, device=device_of(gpu, device),
                          reporter=Reporter(quiet))
    console = Console()
    console.print(_policy_table(f"{report['split']} split: {report['clips']} clips, {report['abnormal']} abnormal",
                                report["policies"]))
    areas = Table(title="AUROC of each statistic (abnormal = positive)")
    areas.add_column("statistic", no_wrap=True)
    areas.add_column("AUROC", justify="right")
    for name, value in report["auroc"].items():
        areas.add_row(name, "-" if value is None else f"{value:.3f}")
    console.print(areas)
    console.print(f"written: {detector / f'evaluation_{split.value}.json'}, roc_{split.value}.png, "
                  f"histograms_{split.value}.png", markup=False, highlight=False)


def _policy_table(title: str, metrics: dict[str, dict]) -> Table:
    grid = Table(title=title)
    grid.add_column("policy", no_wrap=True)
    for column in ("mean cost", "accuracy", "precision", "recall", "F1", "alerts"):
        grid.add_column(column, justify="right")
    for name, m in metrics.items():
        grid.add_row(name, f"{m['mean_cost']:.3f}", f"{m['accuracy']:.3f}", f"{m['precision']:.3f}",
                     f"{m['recall']:.3f}", f"{m['f1']:.3f}", f"{m['alerts']}/{m['clips']}")
    return grid


@anomaly_app.command("score")
@cli_command
def score(
    detector: Path = DetectorArg,
    inputs: List[Path] = typer.Argument(..., help="The inputs `cascade predict` takes (.skeleton, .npy, .npz, .json)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: per clip the decision, statistics, fired "
                                 "thresholds and top-k classes."),
    top_k: int = typer.Option(3, "--top-k", "-k", min=1, help="Classes to show per clip."),
    image_size: Optional[tuple[float, float]] = typer.Option(None, "--image-size", metavar="W H", help="Image width "
                                                             "and height, for models that normalise by image size."),
    without_confidence: bool = typer.Option(False, "--without-confidence", help="As in `cascade predict`."),
    llm_url: Optional[str] = typer.Option(None, "--llm-url", help="An OpenAI-compatible endpoint (e.g. "
                                          "http://127.0.0.1:8000/v1): adds a language model's rationale."),
    llm_model: Optional[str] = typer.Option(None, "--llm-model", help="The model name at --llm-url."),
    llm_key_env: str = typer.Option("CASCADE_LLM_API_KEY", "--llm-key-env", help="The environment variable holding "
                                    "the endpoint's API key (never logged)."),
    llm_decides: bool = typer.Option(False, "--llm-decides", help="Let the language model choose LOG or ALERT, as "
                                     "the authors' agent does (an unusable reply logs)."),
    early_exit: Optional[float] = typer.Option(None, "--early-exit", metavar="THRESHOLD", help="Classify through the "
                                               "early-exit cascade, as in `cascade predict` (the detector's "
                                               "checkpoint needs exit heads, and its policy must read statistics "
                                               "of the logits only: clips leaving early never pool features)."),
    exit_rule: ExitRule = ExitRuleOpt,
    gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt,
) -> None:
    """LOG or ALERT for each clip of raw files, with the statistics and the thresholds that fired.

    Example:  cascade anomaly score detectors/ft clip.npy S001C001P001R001A043.skeleton
    """
    import json

    from cascade_cli.anomaly.alerts import score as run_score
    from cascade_cli.anomaly.detector import open_detector
    from cascade_cli.errors import UserError

    llm = None
    if llm_url or llm_model:
        if not (llm_url and llm_model):
            raise UserError("the language-model step needs both --llm-url and --llm-model")
        from cascade_cli.anomaly.llm import LLMDecider, LLMSettings

        llm = LLMDecider(LLMSettings(llm_url, llm_model, key_env=llm_key_env, decides=llm_decides))
    results = run_score(open_detector(detector), inputs, top_k=top_k, device=device_of(gpu, device),
                        image_size=image_size, without_confidence=without_confidence, llm=llm,
                        exit_threshold=early_exit, exit_rule=exit_rule.value)
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    else:
        grid = Table(title=f"anomaly decisions ({len(results)} clip(s))")
        for column in ("input", "decision", "fired", "top class", *(["exit"] if early_exit is not None else [])):
            grid.add_column(column)
        for r in results:
            grid.add_row(escape(Path(r["input"]).name), r["decision"], escape(", ".join(r["fired"]) or "-"),
                         escape(f"{r['top'][0]['class']} ({100 * r['top'][0]['prob']:.1f} %)"),
                         *([r["exit"]] if early_exit is not None else []))
        Console().print(grid)
    if llm is not None and llm.fallbacks:
        Reporter().warn(f"{llm.fallbacks} of {llm.calls} language-model replies were unusable; the threshold "
                        f"decision{' (LOG)' if llm_decides else ''} stood for those clips")
