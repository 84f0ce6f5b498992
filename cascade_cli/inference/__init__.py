"""The inference layer: load a finetuned classifier, score prepared splits or raw files.

Every command that runs a trained model (evaluate, predict, and the capabilities built on them)
goes through these functions and never imports the trainer:

    classifier = load_classifier("runs/ft")                  # best checkpoint, eval mode
    scores = score_split(classifier, "test", views=1)         # logits, embeddings, labels, names
    scores = score_inputs(classifier, ["clip.npy"])           # raw files, the checkpoint's preprocessing
"""

from cascade_cli.inference.classifier import Classifier, load_classifier
from cascade_cli.inference.inputs import InputClip, model_input, read_inputs
from cascade_cli.inference.scorer import Scores, score_indices, score_inputs, score_split

__all__ = ["Classifier", "InputClip", "Scores", "load_classifier", "model_input", "read_inputs", "score_indices",
           "score_inputs", "score_split"]
