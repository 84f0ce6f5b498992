"""Training: the epoch loop, the two objectives, optimisers and schedules, run directories.

    stages.py       pretrain / finetune from a resolved config into a run directory
    loop.py         the shared epoch loop (fit): checkpoints, selection on validation, exact resume
    objectives.py   masked reconstruction and classification losses and their validation
    optim.py        optimisers, learning-rate schedules and how they continue after an amendment
    run_dir.py      config.yaml, the config-drift check and amendments, the run's lock
    masking.py      pretraining masks and the masked MSE
    fast_dropout.py the cheaper CPU dropout masks (config key fast_cpu_dropout)
    distributed.py  DDP under torchrun

Nothing in cascade_cli.inference imports this package.
"""

from cascade_cli.training.stages import finetune, pretrain

__all__ = ["finetune", "pretrain"]
