"""Chapter parameters: the per-profile preamble, and one clear sentence for a value a chapter cannot use.

A chapter's ``parameters`` cell (papermill's) sets ``profile``, ``seed`` and the experiment's knobs;
a knob whose default depends on the profile is ``None`` there. The next cell declares, once, the
per-profile defaults and the allowed values of every parameter, and one call fills and checks them::

    PROFILES = {  # the defaults of the knobs left at None in the parameters cell
        "quick": dict(width=64, n_seeds=5, lr=5e-3),
        "full": dict(width=256, n_seeds=10, lr=1e-3),
    }
    KNOBS = dict(width=repro.integer(ge=1), n_seeds=repro.integer(ge=5), lr=repro.number(gt=0),
                 act=repro.choice("relu", "tanh"))
    prof = repro.fill_parameters(globals(), PROFILES, KNOBS)

``fill_parameters`` replaces a knob by its profile's default only where the knob *is None*, so 0,
False and [] given by a user are kept; then it checks every parameter against its declaration and
raises :class:`ParameterError` (one sentence naming the parameter and the allowed values) on the first
bad one. A profile table that names an undeclared knob, and a papermill parameter that the chapter
does not declare, are errors too.
"""
from __future__ import annotations

import ast
import numbers
from dataclasses import dataclass

import numpy as np

PROFILE_CHOICES = ("auto", "quick", "full")


class ParameterError(ValueError):
    """A chapter parameter has a value the chapter cannot use. The message is one sentence."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def _render_traceback_(self):
        # Jupyter/papermill show this instead of a long traceback: one clear sentence.
        return [f"ParameterError: {self.message}"]


# ------------------------------------------------------------------------------------------------
# Declarations of allowed values. Each has ``check(name, value)``, which returns the value (lists come
# back as lists) or raises ParameterError, and ``describe()``, the allowed values in words.
# ------------------------------------------------------------------------------------------------

def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _bounds_text(gt, ge, lt, le) -> str:
    parts = [f"> {gt}" if gt is not None else f">= {ge}" if ge is not None else None,
             f"< {lt}" if lt is not None else f"<= {le}" if le is not None else None]
    parts = [p for p in parts if p]
    if len(parts) == 2 and ge is not None and le is not None:
        return f"between {ge} and {le}"
    return " and ".join(parts)


@dataclass(frozen=True)
class Number:
    """A real number (an integer when ``integer``) within optional bounds gt/ge (lower), lt/le (upper)."""
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    integer: bool = False

    def describe(self, plural: bool = False) -> str:
        kind = ("integers" if plural else "an integer") if self.integer else ("numbers" if plural else "a number")
        bounds = _bounds_text(self.gt, self.ge, self.lt, self.le)
        return f"{kind} {bounds}".strip()

    def ok(self, value) -> bool:
        if not _is_number(value) or (self.integer and not isinstance(value, numbers.Integral)):
            return False
        if not np.isfinite(value):
            return False
        return ((self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
                and (self.lt is None or value < self.lt) and (self.le is None or value <= self.le))

    def check(self, name: str, value):
        if not self.ok(value):
            raise ParameterError(f"{name} must be {self.describe()}; got {value!r}.")
        return value


def integer(*, gt=None, ge=None, lt=None, le=None) -> Number:
    """An integer, e.g. ``integer(ge=1)`` for a width or a count."""
    return Number(gt, ge, lt, le, integer=True)


def number(*, gt=None, ge=None, lt=None, le=None) -> Number:
    """A real number, e.g. ``number(gt=0)`` for a learning rate, ``number(ge=0, le=1)`` for a fraction."""
    return Number(gt, ge, lt, le, integer=False)


@dataclass(frozen=True)
class Choice:
    values: tuple

    def describe(self, plural: bool = False) -> str:
        return ("values from " if plural else "one of ") + ", ".join(map(repr, self.values))

    def ok(self, value) -> bool:
        # True == 1 in Python; a flag takes only True/False and a numeric choice no bool
        return any(value == v and isinstance(value, (bool, np.bool_)) == isinstance(v, bool) for v in self.values)

    def check(self, name: str, value):
        if not self.ok(value):
            raise ParameterError(f"{name} must be {self.describe()}; got {value!r}.")
        return value


def choice(*values) -> Choice:
    """One of the given values, e.g. ``choice("relu", "tanh")``."""
    if not values:
        raise ValueError("choice needs at least one allowed value.")
    return Choice(tuple(values))


def flag() -> Choice:
    """True or False."""
    return Choice((True, False))


@dataclass(frozen=True)
class ListOf:
    item: object
    min_len: int = 1
    max_len: int | None = None

    def describe(self, plural: bool = False) -> str:
        size = (f"exactly {self.min_len}" if self.max_len == self.min_len else
                f"{self.min_len} to {self.max_len}" if self.max_len is not None else f"at least {self.min_len}")
        return f"{'lists' if plural else 'a list'} of {size} {self.item.describe(plural=True)}"

    def ok(self, value) -> bool:
        return (isinstance(value, (list, tuple)) and len(value) >= self.min_len
                and (self.max_len is None or len(value) <= self.max_len) and all(self.item.ok(v) for v in value))

    def check(self, name: str, value):
        if not self.ok(value):
            raise ParameterError(f"{name} must be {self.describe()}; got {value!r}.")
        return list(value)


def list_of(item, *, min_len: int = 1, max_len: int | None = None) -> ListOf:
    """A list (or tuple, given as a list) of values that each satisfy ``item``."""
    return ListOf(item, min_len, max_len)


@dataclass(frozen=True)
class Optional:
    item: object

    def describe(self, plural: bool = False) -> str:
        return f"None or {self.item.describe(plural)}"

    def ok(self, value) -> bool:
        return value is None or self.item.ok(value)

    def check(self, name: str, value):
        if not self.ok(value):
            raise ParameterError(f"{name} must be {self.describe()}; got {value!r}.")
        return None if value is None else self.item.check(name, value)


def optional(item) -> Optional:
    """``item`` or None (for a knob whose None means "not used", with no profile default)."""
    return Optional(item)


# ------------------------------------------------------------------------------------------------
# The preamble helper
# ------------------------------------------------------------------------------------------------

STANDARD = {"profile": choice(*PROFILE_CHOICES), "seed": integer(ge=0)}


def _injected_names(namespace: dict) -> list[str]:
    """The names papermill's injected-parameters cell assigned, read from the kernel's input history."""
    history = namespace.get("In")
    if not isinstance(history, list):
        return []
    for source in reversed(history):
        if isinstance(source, str) and source.lstrip().startswith("# Parameters"):
            try:
                tree = ast.parse(source)
            except SyntaxError:
                return []
            return [t.id for node in tree.body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)]
    return []


def fill_parameters(namespace: dict, profiles: dict, knobs: dict) -> str:
    """Fill the knobs left at None from the active profile's table, check every parameter, return the profile.

    ``namespace`` is the chapter's ``globals()`` (it is updated in place); ``profiles`` maps "quick" and
    "full" to dicts of defaults with the same keys; ``knobs`` maps every parameter of the chapter except
    ``profile`` and ``seed`` (which are always declared) to its allowed values (:func:`integer`,
    :func:`number`, :func:`choice`, :func:`flag`, :func:`list_of`, :func:`optional`).
    """
    from .runcard import resolve_profile

    declared = {**STANDARD, **knobs}
    for name, spec in declared.items():
        if not hasattr(spec, "check"):
            raise TypeError(f"the declaration of {name!r} must be repro.integer, number, choice, flag, list_of or "
                            f"optional; got {spec!r}.")
    if set(profiles) != {"quick", "full"}:
        raise ParameterError(f"the profile table must have exactly the profiles 'quick' and 'full'; "
                             f"it has {', '.join(map(repr, profiles))}.")
    if set(profiles["quick"]) != set(profiles["full"]):
        differ = sorted(set(profiles["quick"]) ^ set(profiles["full"]))
        raise ParameterError(f"the quick and full profiles must set the same knobs; only one of them sets "
                             f"{', '.join(differ)}.")
    known = ", ".join(declared)
    for prof_name, table in profiles.items():
        for name in table:
            if name not in knobs:
                raise ParameterError(f"the {prof_name} profile sets {name!r}, which is not a declared knob of this "
                                     f"chapter; the declared parameters are: {known}.")
    for name in _injected_names(namespace):
        if name not in declared:
            raise ParameterError(f"{name!r} is not a parameter of this chapter; its parameters are: {known}.")
    for name in declared:
        if name not in namespace:
            raise ParameterError(f"{name!r} is declared but the parameters cell does not set it; set it there "
                                 f"(None to take the profile's default).")

    prof = resolve_profile(STANDARD["profile"].check("profile", namespace["profile"]))
    for name, spec in declared.items():
        value = namespace[name]
        if value is None and name in profiles[prof]:
            value = profiles[prof][name]
        namespace[name] = spec.check(name, value)
    return prof


# ------------------------------------------------------------------------------------------------
# Single checks, for what a declaration cannot say (a relation between two parameters) and for the
# library's own functions.
# ------------------------------------------------------------------------------------------------

def check_choice(name: str, value, allowed) -> None:
    """Raise ParameterError unless ``value`` is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ParameterError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}.")


def check_positive(name: str, value, *, integer: bool = False, allow_zero: bool = False) -> None:
    """Raise ParameterError unless ``value`` is a positive number (an int when ``integer``)."""
    Number(gt=None if allow_zero else 0, ge=0 if allow_zero else None, integer=integer).check(name, value)


def check_range(name: str, value, low, high) -> None:
    """Raise ParameterError unless ``low <= value <= high``."""
    Number(ge=low, le=high).check(name, value)
