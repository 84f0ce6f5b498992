"""A class-incremental run: tasks one after another, each method's losses, evaluation after every task,
and resume from the last finished epoch (model, optimizer, buffer and random states included).

Methods (reference continual_learning.md §3; Mammoth's conventions):

    ft       cross-entropy on the current task only (the lower bound)
    joint    every task's training clips at once (the upper bound; one row of accuracies)
    er       each step also trains on a buffer mini-batch (concatenated, one cross-entropy)
    der      + alpha * MSE(logits of buffer clips, the logits stored with them)
    derpp    DER + beta * cross-entropy on a second, independent buffer mini-batch
    charon   DER++'s shape, with frames hidden before T1 and T1's decoder reconstructing the whole
             clip (gamma * MSE) on stream and buffer clips; a buffer that keeps every s-th frame in
             s times the slots; filled only by linear probing of the head at the end of each task,
             after which every stored clip's logits are refreshed

Every method rehearses from the same reservoir buffer. The buffer stores clips through the
evaluation transform (no augmentation), as Mammoth stores its non-augmented inputs. Training uses
no learning-rate schedule, as the CHARON code; the optimizer starts afresh with every task.
No task sees a later task's data: the model starts from scratch, and clips enter the buffer only
while their own task trains.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file as load_arrays
from safetensors.numpy import save_file as save_arrays

from cascade_cli.checkpoint import load_checkpoint, load_trainer_state, save_checkpoint, save_trainer_state
from cascade_cli.config import Config
from cascade_cli.continual.buffer import ReservoirBuffer
from cascade_cli.continual.tasks import class_order, split_tasks
from cascade_cli.data.format import PreparedDataset
from cascade_cli.data.pipeline import ClipDataset, collate_clips, model_input_shape
from cascade_cli.data.sampler import LengthBucketSampler
from cascade_cli.data.splits import run_splits
from cascade_cli.errors import UserError
from cascade_cli.inference import Classifier, score_indices
from cascade_cli.metrics import continual_metrics
from cascade_cli.model import build_classifier, build_t1, padding_mask
from cascade_cli.progress import Reporter
from cascade_cli.runtime import resolve_device
from cascade_cli.training.fast_dropout import use_fast_dropout
from cascade_cli.training.masking import apply_mask, draw_mask
from cascade_cli.training.optim import build_optimizer

REHEARSAL = ("er", "der", "derpp", "charon")


@dataclass
class Task:
    classes: list[int]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def plan_tasks(cfg: Config, dataset: PreparedDataset) -> list[Task]:
    """The tasks of a run: each holds its classes' clips of the run's train, validation and test splits."""
    splits = run_splits(cfg, dataset)
    groups = split_tasks(class_order(cfg.continual.class_order, dataset.class_names), cfg.continual.tasks)
    labels = dataset.labels

    def of(indices: np.ndarray, classes: list[int]) -> np.ndarray:
        return indices[np.isin(labels[indices], classes)]

    return [Task(g, of(splits.train, g), of(splits.val, g), of(splits.test, g)) for g in groups]


class Learner:
    def __init__(self, cfg: Config, dataset: PreparedDataset, run_dir: Path, reporter: Reporter):
        if cfg.data.frames <= 0:
            raise UserError("continual learning keeps clips of one length in its buffer: set data.frames > 0")
        self.cfg, self.c, self.dataset, self.run_dir, self.reporter = cfg, cfg.continual, dataset, run_dir, reporter
        self.tasks = plan_tasks(cfg, dataset)
        if empty := [t for t, task in enumerate(self.tasks, 1) if not len(task.train) or not len(task.test)]:
            raise UserError(f"task(s) {', '.join(map(str, empty))} have no training or no test clip in protocol "
                            f"'{cfg.data.protocol or 'the only one'}'")
        self.device = resolve_device(cfg.device)
        self.shape = model_input_shape(dataset, cfg.data)
        torch.manual_seed(cfg.seed)
        self.model = build_classifier(cfg.model, *self.shape, dataset.num_classes)
        if self.c.method == "charon":  # T1 with its decoder: the reconstruction branch
            self.model.t1 = build_t1(cfg.model, *self.shape, with_decoder=True)
        if cfg.fast_cpu_dropout and self.device.type == "cpu":
            use_fast_dropout(self.model)
        self.model.to(self.device)
        compression = self.c.compression if self.c.method == "charon" else 1
        self.buffer = ReservoirBuffer(self.c.buffer, cfg.data.frames, self.shape, dataset.num_classes,
                                      compression=compression, seed=cfg.seed)
        self.train_items = ClipDataset(dataset, np.arange(dataset.num_clips), cfg.data, train=True, seed=cfg.seed)
        self.plain_items = ClipDataset(dataset, np.arange(dataset.num_clips), replace(cfg.data, eval_flip=False),
                                       train=False, seed=cfg.seed)  # one plain view per clip

    # -- steps ------------------------------------------------------------------------------------
    def _batch(self, clips: np.ndarray, augmented: bool) -> tuple[torch.Tensor, torch.Tensor]:
        items = self.train_items if augmented else self.plain_items
        batch = collate_clips([items[int(i)] for i in clips])
        return batch.x.to(self.device), batch.labels.to(self.device)

    def _forward(self, x: torch.Tensor, masks: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits, and for CHARON (masks given) T1's reconstruction of the whole clip from a masked one."""
        if masks is None:
            return self.model(x), None
        lengths = torch.full((len(x),), x.shape[1], device=x.device)
        hidden, _ = draw_mask("frames", self.c.mask_ratio, lengths, x.shape[1], x.shape[2], masks)
        tokens = self.model.t1(apply_mask(x, hidden))
        return self.model.head(self.model.pool(tokens)), self.model.t1.reconstruct(tokens)

    def _buffer_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        slots = self.buffer.sample(self.c.batch_size)
        x = torch.from_numpy(self.buffer.clips(slots)).to(self.device)
        return (x, torch.from_numpy(self.buffer.labels[slots]).to(self.device),
                torch.from_numpy(self.buffer.logits[slots]).to(self.device))

    def _loss(self, x: torch.Tensor, y: torch.Tensor, masks: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The method's loss on a stream batch, and the stream clips' logits (what DER stores)."""
        method, c, stream = self.c.method, self.c, len(x)
        if method == "er" and len(self.buffer):
            bx, by, _ = self._buffer_batch()
            x, y = torch.cat([x, bx]), torch.cat([y, by])
        logits, recon = self._forward(x, masks)
        loss = F.cross_entropy(logits, y) + (c.gamma * F.mse_loss(recon, x) if recon is not None else 0.0)
        if method in ("der", "derpp", "charon") and len(self.buffer):
            bx, _, bz = self._buffer_batch()
            out, rec = self._forward(bx, masks)
            loss = loss + c.alpha * (F.mse_loss(out, bz) + (c.gamma * F.mse_loss(rec, bx) if rec is not None else 0.0))
            if method in ("derpp", "charon"):
                bx2, by2, _ = self._buffer_batch()
                out2, rec2 = self._forward(bx2, masks)
                loss = loss + c.beta * (F.cross_entropy(out2, by2) +
                                        (c.gamma * F.mse_loss(rec2, bx2) if rec2 is not None else 0.0))
        return loss, logits[:stream]

    def _epoch(self, task: int, clips: np.ndarray, epoch: int, optimizer, probe: bool = False) -> float:
        """One pass over `clips`; returns the mean loss. Rehearsal methods but CHARON add the task's
        clips to the buffer as they go; CHARON adds them only while probing."""
        sampler = LengthBucketSampler(np.full(len(clips), self.cfg.data.frames), self.c.batch_size,
                                      seed=self.cfg.seed * 1009 + task * 101 + (1000 if probe else 0), bucket=False)
        sampler.set_epoch(epoch)
        masks = (torch.Generator().manual_seed(self.cfg.seed * 7919 + task * 131 + epoch)
                 if self.c.method == "charon" and not probe else None)
        self.model.train()
        total, count = 0.0, 0
        for batch in sampler:
            chosen = clips[np.asarray(batch)]
            x, y = self._batch(chosen, augmented=True)
            if probe:
                logits = self.model(x)
                loss = F.cross_entropy(logits, y)
            else:
                loss, logits = self._loss(x, y, masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(chosen), count + len(chosen)
            adds = probe or (self.c.method in REHEARSAL and self.c.method != "charon")
            if adds:
                plain, _ = self._batch(chosen, augmented=False)
                self.buffer.add(plain.cpu().numpy(), y.cpu().numpy(), task,
                                logits[:len(chosen)].detach().float().cpu().numpy())
        return total / max(count, 1)

    @torch.no_grad()
    def _refresh_logits(self) -> None:
        """CHARON: after probing, every stored clip's logits are those of the current model."""
        self.model.eval()
        for start in range(0, len(self.buffer), 64):
            slots = np.arange(start, min(start + 64, len(self.buffer)))
            x = torch.from_numpy(self.buffer.clips(slots)).to(self.device)
            self.buffer.logits[slots] = self.model(x).float().cpu().numpy()

    def _probe(self, task: int, clips: np.ndarray) -> None:
        head = list(self.model.head.parameters())
        frozen = [p for p in self.model.parameters() if all(p is not h for h in head)]
        for p in frozen:
            p.requires_grad_(False)
        optimizer = build_optimizer(head, self.c.optim)
        for epoch in range(self.c.probe_epochs):
            self._epoch(task, clips, epoch, optimizer, probe=True)
        for p in frozen:
            p.requires_grad_(True)
        self._refresh_logits()

    def accuracies(self) -> list[float]:
        """Top-1 on every task's test clips, through the inference layer's scorer."""
        meta = {"class_names": list(self.dataset.class_names), "num_joints": self.shape[0],
                "in_channels": self.shape[1], "protocol": self.cfg.data.protocol,
                "layout": self.dataset.layout.to_dict(), "dataset": self.dataset.name}
        classifier = Classifier(self.model.eval(), self.cfg, meta, self.run_dir, self.device)
        row = []
        for task in self.tasks:
            scores = score_indices(classifier, self.dataset, task.test)
            row.append(float((scores.predictions == scores.labels).mean()))
        return row

    def _pretrain_first_task(self) -> None:
        """Masked pretraining of T1 (with a decoder) on the first task's training clips only."""
        from cascade_cli.training.objectives import PretrainObjective

        t1 = self.model.t1 if self.model.t1.reconstruction_head is not None else \
            build_t1(self.cfg.model, *self.shape, with_decoder=True).to(self.device)
        if t1 is not self.model.t1:
            t1.load_state_dict(self.model.t1.state_dict(), strict=False)
        objective, clips = PretrainObjective(self.cfg), self.tasks[0].train
        optimizer = build_optimizer(list(t1.parameters()), self.cfg.pretrain.optim)
        t1.train()
        for epoch in range(self.cfg.pretrain.epochs):
            sampler = LengthBucketSampler(np.full(len(clips), self.cfg.data.frames), self.cfg.pretrain.batch_size,
                                          seed=self.cfg.seed, bucket=False)
            sampler.set_epoch(epoch)
            masks = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
            for batch in sampler:
                items = collate_clips([self.train_items[int(i)] for i in clips[np.asarray(batch)]])
                loss, _ = objective.loss(t1, items, self.device, masks)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            self.reporter.info(f"pretraining T1 on task 1: epoch {epoch + 1}/{self.cfg.pretrain.epochs}  loss {loss.item():.4f}")
        if t1 is not self.model.t1:
            self.model.t1.load_state_dict({k: v for k, v in t1.state_dict().items()
                                           if not k.startswith("reconstruction_head.")})

    # -- the run ------------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict:
        state = self._load() if resume else {"task": 0, "epoch": 0, "rows": [], "seconds": []}
        if self.c.pretrain == "first_task" and state["task"] == 0 and state["epoch"] == 0:
            self._pretrain_first_task()
        schedule = ([Task(sum((t.classes for t in self.tasks), []), np.concatenate([t.train for t in self.tasks]),
                          np.concatenate([t.val for t in self.tasks]), np.concatenate([t.test for t in self.tasks]))]
                    if self.c.method == "joint" else self.tasks)
        for t in range(state["task"], len(schedule)):
            started = time.perf_counter() - (state.get("elapsed", 0.0) if t == state["task"] else 0.0)
            optimizer = build_optimizer([p for p in self.model.parameters() if p.requires_grad], self.c.optim)
            if t == state["task"] and state.get("optimizer") is not None:
                optimizer.load_state_dict(state["optimizer"])
            first = state["epoch"] if t == state["task"] else 0
            for epoch in range(first, self.c.epochs):
                loss = self._epoch(t, schedule[t].train, epoch, optimizer)
                self.reporter.info(f"task {t + 1}/{len(schedule)} epoch {epoch + 1}/{self.c.epochs}  loss {loss:.4f}")
                self._save(t, epoch + 1, state["rows"], state["seconds"], optimizer, time.perf_counter() - started)
            if self.c.method == "charon" and self.c.probe_epochs:
                self._probe(t, schedule[t].train)
            row = self.accuracies()
            state["rows"].append(row)
            state["seconds"].append(time.perf_counter() - started)
            self.reporter.info(f"after task {t + 1}: " + "  ".join(f"T{j + 1} {100 * a:.1f}" for j, a in
                                                                  enumerate(row)))
            self._save(t + 1, 0, state["rows"], state["seconds"], None, 0.0)
        return self._result(state["rows"], state["seconds"])

    def _result(self, rows: list[list[float]], seconds: list[float]) -> dict:
        matrix = np.asarray(rows)
        if self.c.method == "joint":  # one training on every task: only its final row exists
            summary = {"faa": float(matrix[-1].mean()), "forgetting": None, "bwt": None,
                       "average_incremental_accuracy": None}
        else:
            summary = continual_metrics(matrix)
        return {"method": self.c.method, "tasks": [[self.dataset.class_names[c] for c in t.classes] for t in self.tasks],
                "accuracy": matrix.tolist(), **summary, "seconds_per_task": seconds,
                "buffer_bytes": self.buffer.nbytes if self.c.method in REHEARSAL else 0,
                "buffer_clips": len(self.buffer) if self.c.method in REHEARSAL else 0}

    # -- resume -------------------------------------------------------------------------------------
    def _save(self, task: int, epoch: int, rows: list, seconds: list, optimizer, elapsed: float) -> None:
        """After every epoch: where the run is, the model, the optimizer, the buffer, every RNG."""
        state_dir = self.run_dir / "state"
        save_checkpoint(state_dir / "model.safetensors", self.model, self.cfg, {"kind": "continual", "task": task})
        save_arrays({k: v for k, v in self.buffer.state_dict().items() if isinstance(v, np.ndarray)},
                    str(state_dir / "buffer.safetensors"))
        save_trainer_state(state_dir / "trainer_state.pt", {
            "optimizer": optimizer.state_dict() if optimizer is not None else None, "rng_cpu": torch.get_rng_state()})
        (state_dir / "progress.json").write_text(json.dumps({
            "task": task, "epoch": epoch, "rows": rows, "seconds": seconds, "elapsed": elapsed,
            "buffer_seen": self.buffer.seen, "buffer_rng": self.buffer.rng.bit_generator.state}))

    def _load(self) -> dict:
        state_dir = self.run_dir / "state"
        if not (state_dir / "progress.json").is_file():
            return {"task": 0, "epoch": 0, "rows": [], "seconds": []}
        progress = json.loads((state_dir / "progress.json").read_text())
        self.model.load_state_dict(load_checkpoint(state_dir / "model.safetensors").state_dict)
        arrays = load_arrays(str(state_dir / "buffer.safetensors"))
        self.buffer.load_state_dict({**arrays, "seen": progress["buffer_seen"], "rng": progress["buffer_rng"]})
        trainer = load_trainer_state(state_dir / "trainer_state.pt")
        torch.set_rng_state(trainer["rng_cpu"])
        return {**progress, "optimizer": trainer["optimizer"]}


def run_continual(cfg: Config, run_dir: str | Path, reporter: Reporter | None = None, resume: bool = False,
                  amend: bool = False) -> dict:
    """One class-incremental run into `run_dir` (config.yaml, state/, continual.json, accuracy.csv/.png),
    resumable like every training run: the run directory is locked and its config checked."""
    from cascade_cli.continual.report import write_result
    from cascade_cli.data.format import open_dataset
    from cascade_cli.training.run_dir import RUN_LOG, open_run

    reporter = reporter or Reporter(quiet=True)
    run_dir = Path(run_dir)
    if not cfg.data.path:
        raise UserError("no dataset given: pass --data DIR (a prepared dataset)")
    dataset = open_dataset(cfg.data.path)
    dataset.check_before_use()
    learner = Learner(cfg, dataset, run_dir, reporter)
    with open_run(run_dir, cfg, "continual", resume=resume, amend=amend) as run, reporter.logging_to(run_dir / RUN_LOG):
        reporter.info(f"{cfg.continual.method}: {len(learner.tasks)} tasks of {len(learner.tasks[0].classes)} classes "
                      f"on {dataset.name}, buffer {cfg.continual.buffer}, {learner.device}")
        result = learner.run(resume=run.resumable or (run_dir / "state" / "progress.json").is_file())
    result.update(dataset=dataset.name, protocol=learner.cfg.data.protocol or next(iter(dataset.protocols)),
                  buffer=cfg.continual.buffer, tasks_count=len(learner.tasks), seed=cfg.seed)
    write_result(run_dir, result)
    return result
