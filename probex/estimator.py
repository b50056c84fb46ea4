"""The scikit-learn estimator contract that the experts and the TreeRouter share.

Every probex estimator is a scikit-learn ``BaseEstimator``: ``__init__`` stores its arguments
unchanged, so ``sklearn.base.clone``, ``get_params(deep=True)``, ``set_params`` and the repr
are scikit-learn's own. This module adds two habits on top:

- ``fit`` first calls ``self._check_params()``: every hyperparameter is checked against the
  class's ``parameter_rules`` (ranges, choices, types) before any data is read or any text
  encoder loaded, and the first one out of bounds raises :class:`~probex.errors.ParameterError`
  naming it;
- everything else (predict, score, encode, route, save, ...) first calls
  ``self._check_fitted()``, which raises :class:`NotFittedError` until ``fit`` has run.

A rule is one line per parameter::

    class MyExpert(ProbeXClassifier):
        parameter_rules = {**ProbeXClassifier.parameter_rules, "width": integer(low=1)}
"""

from __future__ import annotations

import math
import numbers
import reprlib
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from probex.errors import ParameterError, ProbeXError


class NotFittedError(ProbeXError, SklearnNotFittedError):
    """An estimator asked to predict, score, encode, route or save before ``fit``.

    It is scikit-learn's ``NotFittedError`` too (a ValueError and an AttributeError), so code
    written for scikit-learn catches it as usual.
    """


@dataclass(frozen=True)
class Rule:
    """What one hyperparameter may be: ``accepts(value)``, and ``expected`` for the error message."""

    expected: str
    accepts: Callable[[Any], bool]


def _or_none(rule: Rule, optional: bool) -> Rule:
    if not optional:
        return rule
    return Rule(f"{rule.expected}, or None", lambda value: value is None or rule.accepts(value))


def _within(value: float, low: Optional[float], high: Optional[float], low_open: bool) -> bool:
    if low is not None and (value <= low if low_open else value < low):
        return False
    return high is None or value <= high


def _range_words(low: Optional[float], high: Optional[float], low_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}]"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    return f" <= {high}" if high is not None else ""


def integer(low: Optional[int] = None, high: Optional[int] = None, optional: bool = False) -> Rule:
    """A whole number (not a bool) in [low, high]; ``optional`` also accepts None."""
    def accepts(value: Any) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool) and _within(value, low, high, False)

    return _or_none(Rule("an integer" + _range_words(low, high, False), accepts), optional)


def real(low: Optional[float] = None, high: Optional[float] = None, low_open: bool = False,
         optional: bool = False) -> Rule:
    """A finite number (not a bool) in [low, high], or (low, high] with ``low_open``; ``optional`` also accepts None."""
    def accepts(value: Any) -> bool:
        return (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
                and _within(value, low, high, low_open))

    return _or_none(Rule("a number" + _range_words(low, high, low_open), accepts), optional)


def one_of(*choices: Any) -> Rule:
    """One of ``choices`` (compared with ==, strings only equal strings)."""
    def accepts(value: Any) -> bool:
        return any(type(value) is type(choice) and value == choice for choice in choices)

    return Rule("one of " + ", ".join(repr(choice) for choice in choices), accepts)


def boolean() -> Rule:
    """True or False."""
    return Rule("True or False", lambda value: isinstance(value, bool))


def instance_of(*types: type, optional: bool = False, expected: Optional[str] = None) -> Rule:
    """An instance of one of ``types``; ``expected`` words it for the message (default: the type names)."""
    words = expected or " or ".join(f"a {kind.__name__}" for kind in types)
    return _or_none(Rule(words, lambda value: isinstance(value, types)), optional)


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 120, 120, 6, 6


class Estimator(BaseEstimator):
    """A scikit-learn estimator whose ``fit`` checks its parameters first and whose other methods need ``fit``."""

    #: parameter name -> Rule; ``_check_params`` checks every parameter that has one
    parameter_rules: ClassVar[dict[str, Rule]] = {}
    #: what the not-fitted message tells the user to do
    _fit_hint: ClassVar[str] = "call fit(...) first"

    def _check_params(self) -> None:
        """Raise ParameterError for the first hyperparameter that breaks its rule (``fit`` calls this first)."""
        for name, value in self.get_params(deep=False).items():
            rule = self.parameter_rules.get(name)
            if rule is not None and not rule.accepts(value):
                raise ParameterError(f"{type(self).__name__}: {name} must be {rule.expected}; got {_SHORT.repr(value)}")

    def __sklearn_is_fitted__(self) -> bool:
        """Whether ``fit`` has run (scikit-learn's ``check_is_fitted`` asks this).

        By default: some learned attribute (a name ending in ``_``) is set; the built-in
        estimators name the one attribute that ``fit`` sets last.
        """
        return any(name.endswith("_") and not name.startswith("__") for name in vars(self))

    def _check_fitted(self) -> None:
        """Raise NotFittedError unless ``fit`` has run."""
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: {self._fit_hint}")
