"""Experiments: the metrics, the evaluation harness, layer sweeps and the reproduction report.

:mod:`~probex.experiments.metrics` (mean binary accuracy, top-k, kNN, one-class ROC-AUC,
retrieval), :mod:`~probex.experiments.sweep` (every layer of a tree, resumable) and
:mod:`~probex.experiments.sweep_ray` (the same on a Ray cluster), and
:mod:`~probex.experiments.report` (the paper's tables on any zoo that supports them).
"""
