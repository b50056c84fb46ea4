"""Experts that learn from model weights, with the scikit-learn contract.

:mod:`~probex.experts.nn` (the ProbeX and Dense networks; the Propositions),
:mod:`~probex.experts.base` (parameters, saving, ``load_expert``),
:mod:`~probex.experts.classifier` (``ProbeXClassifier``, ``DenseExpert``: training classes),
:mod:`~probex.experts.aligner` (``ProbeXAligner`` and its baselines: weights into a text space),
:mod:`~probex.experts.statnn` (the StatNN baselines), :mod:`~probex.experts.moe` (one expert
per Model Tree behind a router), :mod:`~probex.experts.training` (the shared training loop,
devices, threads), :mod:`~probex.experts.inputs` (what counts as a layer input) and
:mod:`~probex.experts.labels` (labels to targets and back). Public names: ``from probex import ...``.
"""
