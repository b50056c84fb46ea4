"""The library's own exceptions: every error a user can cause is one of these, with a clear message."""

from __future__ import annotations


class ProbeXError(Exception):
    """Base class of every error raised on purpose by probex."""


class ZooError(ProbeXError, ValueError):
    """A model zoo, a model file or a layer cannot be read as asked.

    The message names the file (or model id), the layer and what to do, e.g.
    ``ZooError("model_idx_0042: layer 'down.2.attn2.q' missing; available: ...")``.
    """


class ParameterError(ProbeXError, ValueError):
    """A hyperparameter out of its range, of the wrong type or not among its choices.

    Raised at the start of ``fit``, before any data is read; the message names the estimator,
    the parameter, what it may be and what it was, e.g.
    ``ParameterError("ProbeXClassifier: n_probes must be an integer >= 1; got 0")``.
    """


class HubUnavailableError(ProbeXError, ConnectionError):
    """The Hugging Face Hub (or another remote host) cannot be reached; the message says what to do offline."""
