"""Model Trees: which models share a root, found by hierarchical clustering of one layer.

:mod:`~probex.trees.router` (``TreeRouter``: fit, route, score, save) is the entry point; the
rest serves it: :mod:`~probex.trees.populations` (architectures first, the layer to cluster),
:mod:`~probex.trees.clustering` (exact or subset clustering, trees confirmed exactly),
:mod:`~probex.trees.subset` (random coordinate blocks for very large layers),
:mod:`~probex.trees.cell_sums` (per-cluster sums read in one streaming pass),
:mod:`~probex.trees.distances` (Gram matrices, centres and distances, streamed in chunks) and
:mod:`~probex.trees.dendrogram` (linkage, the cut, and the data a dendrogram is drawn from).
"""
