"""The library's own exceptions: every error a user can cause is one of these, with a clear message.

``ProbeXError`` is the one type to catch: a bad argument, a bad file, a missing layer, a folder
that must not be overwritten. It subclasses ``ValueError``, so code written against the older
``except ValueError`` keeps working. The command line ends every ``ProbeXError`` with one line
on stderr and exit status 2.
"""

from __future__ import annotations


class ProbeXError(ValueError):
    """Base class of every error raised on purpose by probex (a user's input, file or folder is not usable as asked)."""


class ZooError(ProbeXError):
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


class LimitError(ZooError):
    """An input is larger than a documented limit (header size, tensor count, layer size, download size).

    The message names the limit and the environment variable that raises it.
    """


class HubUnavailableError(ProbeXError, ConnectionError):
    """The Hugging Face Hub (or another remote host) cannot be reached; the message says what to do offline."""


# Control characters (C0 but tab and newline, DEL, C1) and the bidirectional overrides that can
# reorder what a terminal shows: names from files must not move the cursor, recolour or hide text.
_UNPRINTABLE = {code: f"\\x{code:02x}" for code in (*range(0x00, 0x20), *range(0x7F, 0xA0)) if code not in (0x09, 0x0A)}
_UNPRINTABLE.update({code: f"\\u{code:04x}" for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))})
_ONE_LINE = {**_UNPRINTABLE, 0x0A: " ", 0x09: " "}


def printable(text: object, one_line: bool = False) -> str:
    """``text`` safe to write to a terminal: control characters (ANSI escapes included) shown as ``\\xNN``.

    With ``one_line``, newlines and tabs become spaces (an error message is one line).
    """
    return str(text).translate(_ONE_LINE if one_line else _UNPRINTABLE)
