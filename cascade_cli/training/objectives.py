"""The two training objectives: masked reconstruction (pretraining) and classification (finetuning).

An objective turns a batch into a loss and running statistics, and a validation pass into the
numbers that select the best epoch. The epoch loop (training/loop.py) knows nothing else of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cascade_cli.config import Config
from cascade_cli.runtime import to_device
from cascade_cli.training.masking import apply_mask, draw_mask, masked_mse

VAL_MASK_SEED = 1234  # validation masks are fixed so that epochs compare fairly


class Objective:
    name: str  # the stage, and the config section it reads
    higher_is_better: bool
    score_key: str  # the validation number that selects the best epoch
    tiebreak_key: str | None = None  # the one (lower is better) that breaks ties of score_key

    def __init__(self, cfg: Config):
        self.cfg = getattr(cfg, self.name)

    def loss(self, model, batch, device, generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def validation_sums(self, model, batch, device, generator) -> dict[str, float]:
        """Sums over the batch's clips of the numbers validation reports as means."""
        raise NotImplementedError

    @torch.no_grad()
    def validate(self, model, loader, device) -> dict[str, float]:
        generator = torch.Generator().manual_seed(VAL_MASK_SEED)
        totals: dict[str, float] = {}
        count = 0
        for batch in loader:  # validation may sync with the device: it runs once per epoch
            for key, value in self.validation_sums(model, batch, device, generator).items():
                totals[key] = totals.get(key, 0.0) + value
            count += len(batch.labels)
        return {key: value / max(count, 1) for key, value in totals.items()}

    def score(self, val: dict[str, float]) -> tuple[float, float | None]:
        """The selection score and its tiebreak."""
        return val[self.score_key], val[self.tiebreak_key] if self.tiebreak_key else None


class PretrainObjective(Objective):
    """Reconstruct hidden coordinates from the visible ones; lower validation MSE is better."""

    name, higher_is_better, score_key = "pretrain", False, "val_loss"

    def loss(self, model, batch, device, generator):
        x, lengths, pad, _ = to_device(batch, device)
        hidden, scored = draw_mask(self.cfg.mask, self.cfg.mask_ratio, lengths, x.shape[1], x.shape[2], generator)
        recon = model(apply_mask(x, hidden), pad, reconstruct=True)
        loss = masked_mse(recon.float(), x, scored)
        return loss, {"loss": loss.detach()}

    def validation_sums(self, model, batch, device, generator):
        loss, _ = self.loss(model, batch, device, generator)
        return {"val_loss": loss.item() * len(batch.labels)}


class FinetuneObjective(Objective):
    """Cross-entropy on clip labels; higher validation top-1 is better."""

    name, higher_is_better, score_key, tiebreak_key = "finetune", True, "val_top1", "val_loss"

    def loss(self, model, batch, device, generator):
        x, _, pad, labels = to_device(batch, device)
        smoothing = self.cfg.label_smoothing
        if self.cfg.exit_loss_weight > 0:  # exit heads learn beside the main head (finetune.exits)
            logits, exits = model(x, pad, with_exits=True)
            exit_loss = torch.stack([F.cross_entropy(z, labels, label_smoothing=smoothing)
                                     for z in exits.values()]).mean()
        else:
            logits, exit_loss = model(x, pad), None
        logits = logits.float()
        loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        stats = {"acc": (logits.argmax(-1) == labels).float().mean()}
        if exit_loss is not None:
            loss = loss + self.cfg.exit_loss_weight * exit_loss
            stats["exit_loss"] = exit_loss.detach()
        return loss, {"loss": loss.detach(), **stats}

    def validation_sums(self, model, batch, device, generator):
        x, _, pad, labels = to_device(batch, device)
        logits = model(x, pad).float()
        return {"val_loss": F.cross_entropy(logits, labels, reduction="sum").item(),
                "val_top1": (logits.argmax(-1) == labels).sum().item()}
