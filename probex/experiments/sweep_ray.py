"""The Ray backend of :func:`probex.experiments.sweep.sweep_layers`: one task per layer on a Ray cluster.

Ray is an optional extra (``pip install ray``). Without an address a local Ray instance is
started (and stopped afterwards) with ``workers`` CPUs; with ``address`` (``"auto"``,
``"ray://head:10001"``) the sweep joins a running cluster, whose workers must have probex
installed and see the zoo's files at the same path. Each layer is one task with one CPU
(``gpus_per_layer`` GPUs when asked for); results come back as each task ends, so the caller
appends them to its results file in the order they finish.

Ray moves the zoo and the fitted experts between its own processes with its serializer; no
file is ever unpickled.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Sequence

from probex.errors import ProbeXError

logger = logging.getLogger(__name__)


def _fit_one(zoo, task: str, layer: str, params: dict):
    """Runs in a Ray worker: one layer's expert and its scores."""
    import torch

    from probex.experiments.sweep import fit_layer

    torch.set_num_threads(1)  # one CPU per task: threads would only fight each other
    return fit_layer(zoo, task, layer, params)


def _import_ray():
    try:
        import ray
    except ImportError as error:
        raise ProbeXError("the Ray backend needs Ray, an optional extra: pip install 'ray>=2.9' "
                          "(or run the sweep with backend='local')") from error
    return ray


def fit_layers_on_ray(
    zoo,
    task: str,
    layers: Sequence[str],
    params: dict,
    record: Callable[[str, Any, Any], None],
    address: Optional[str] = None,
    workers: Optional[int] = None,
    gpus_per_layer: float = 0.0,
) -> None:
    """Fit one expert per layer as Ray tasks; ``record(layer, expert, score)`` as each finishes."""
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        if address is None:
            options["num_cpus"] = workers
        try:
            ray.init(address=address, **options)
        except ConnectionError as error:
            raise ProbeXError(f"cannot join the Ray cluster at {address!r}: {error}. Start one with "
                              "`ray start --head`, or leave the address out for a local instance") from error
    try:
        fit = ray.remote(num_cpus=1, num_gpus=gpus_per_layer)(_fit_one)
        zoo_ref = ray.put(zoo)
        pending = {fit.remote(zoo_ref, task, layer, params): layer for layer in layers}
        logger.info("ray: %d layers submitted to %s", len(pending), ray.cluster_resources())
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for reference in ready:
                layer = pending.pop(reference)
                expert, score = ray.get(reference)
                record(layer, expert, score)
    finally:
        if started_here:
            ray.shutdown()
