"""Early exits: exit heads fitted on a frozen classifier (after T1, or after every encoder layer),
and the report on the cascade that lets clips leave at them (cascade_cli.inference.cascade). Part of
the inference layer: nothing here imports the trainer.

    fit.py      post-hoc fitting of exit heads, the classifier frozen
    report.py   the threshold chosen on validation, and the honest test report (accuracy, FLOPs,
                time, exit shares, calibration)
"""
