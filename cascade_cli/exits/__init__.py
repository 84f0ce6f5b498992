"""Early exits: exit heads fitted on a frozen classifier, and the cascade that lets confident clips
leave after T1 (cascade_cli.inference.cascade). Part of the inference layer: nothing here imports
the trainer.

    fit.py      post-hoc fitting of the exit head after T1, the classifier frozen
    report.py   the threshold chosen on validation, and the honest test report (accuracy, FLOPs,
                time, exit shares, calibration)
"""
