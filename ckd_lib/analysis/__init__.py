"""Analyses of trained models for the visualisation and efficiency notebooks.

- :mod:`.outputs`: logits and penultimate features of a model over a dataset;
- :mod:`.embedding`: t-SNE of student features (seeded, deterministic);
- :mod:`.correlation`: teacher–student class-correlation difference (the DKD/mdistiller figure);
- :mod:`.efficiency`: time per training iteration and memory of CE, KD, DKD, CKD; CKD loss cost
  against the batch size;

Their figures are the report's own (``ckd_lib.report.figures``), drawn by the notebooks from
the same artifact data the report reads, so the two never differ.
"""

import warnings

from ckd_lib.analysis.correlation import class_mean_logits, correlation_difference
from ckd_lib.analysis.efficiency import time_loss, time_methods, time_training_step
from ckd_lib.analysis.embedding import stratified_sample, tsne_embedding
from ckd_lib.analysis.outputs import collect_outputs

# tqdm.auto (imported with the engine) warns in every kernel without ipywidgets: noise here.
warnings.filterwarnings("ignore", message="IProgress not found")

__all__ = [
    "class_mean_logits",
    "collect_outputs",
    "correlation_difference",
    "stratified_sample",
    "time_loss",
    "time_methods",
    "time_training_step",
    "tsne_embedding",
]
