"""The authors' released CascadeFormer checkpoints: where they are on the Hugging Face Hub, and what
each one was trained on (dataset, protocol, joint order, head count).

Kept apart from the conversion code so that the command line can list the choices without
importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from cascade_cli.data.registry import KnownDataset, known_dataset, paper_preset
from cascade_cli.errors import UserError
from cascade_cli.layouts import Layout

HUB_REPO = "YusenPeng/CascadeFormerCheckpoints"
# A pinned commit, so that a conversion names exactly the weights it read: 3f20e88 ("Update README.md")
# of the Hub repo, the only full commit hash of it we found (a crawled commit page; it could not be
# checked online). The 1.0 checkpoint folder was uploaded before it (commit ecf8eb1, "Upload all").
DEFAULT_REVISION = "3f20e887595ca12be118a5265627963caa260a33"
VARIANTS = ("1.0", "1.1", "1.2")


@dataclass(frozen=True)
class OfficialDataset:
    """One released model's dataset: the release's own facts here, the dataset's facts from the registry."""
    name: str  # the registry's (and our prepared dataset's) name
    protocol: str
    hub: str  # the Hub folder is BEST_<hub>_<variant>
    prefix: str  # official file names are <prefix>_<role>.pt
    heads: int  # reference B.4; stored nowhere in the files
    joint_order: str | None = None  # the registry joint order the released weights expect; None: the default

    @property
    def dataset(self) -> KnownDataset:
        return known_dataset(self.name)

    @property
    def layout(self) -> Layout:
        return self.dataset.joint_order(self.joint_order).layout if self.joint_order else self.dataset.layout

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.dataset.class_names

    def preset(self, variant: str) -> str:
        """The Table-1 preset holding this model's official pipeline and sizes."""
        preset = paper_preset(self.name, self.protocol, variant)
        if preset is None:  # a bug: every released model reproduces a Table-1 row
            raise LookupError(f"the registry names no Table-1 preset for {self.name}/{self.protocol}")
        return preset


DATASETS = {
    "penn_action": OfficialDataset("penn_action", "official", "PENN_ACTION", "Penn", 8),
    "nw_ucla": OfficialDataset("nw_ucla", "cross_view", "N_UCLA", "NUCLA", 8, joint_order="official"),
    "ntu60_xsub": OfficialDataset("ntu60", "xsub", "NTU_CS", "NTU", 16),
    "ntu60_xview": OfficialDataset("ntu60", "xview", "NTU_CV", "NTU", 8),
}


def hub_folder(variant: str, dataset: str) -> str:
    """The Hub folder of one released model. Only 1.0 folders are confirmed; 1.1 and 1.2 follow by analogy."""
    if variant not in VARIANTS:
        raise UserError(f"unknown variant {variant!r}; use {', '.join(VARIANTS)}")
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; use {', '.join(DATASETS)}")
    return (f"CascadeFormer_Best_Checkpoints/CascadeFormer_{variant}_best_checkpoints/"
            f"BEST_{DATASETS[dataset].hub}_{variant.replace('.', '_')}")
