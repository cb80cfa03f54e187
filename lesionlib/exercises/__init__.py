"""Checks for the exercises at the end of each notebook: run one after your answer and it says
at once whether the answer is right, with a hint when it is not.

Each notebook's checks live in a module of their own (``n03`` for notebook 03, ...) and are
called from the cell under the learner's answer::

    from lesionlib.exercises import n03 as check
    check.flip(flip)

A check never shows the answer. It says "not answered yet" (and passes) while the learner's
cell still holds its placeholder, so a notebook run top to bottom, as the course's tests run
it, does not stop there; it raises :class:`NotRight` with a hint for a wrong answer (shown
without a traceback, like every :class:`~lesionlib.LesionlibError`); and it prints a line
starting with a tick for a right one. The folded solution under each exercise calls the same
check, so CI proves every solution right, and ``tests/test_exercises_*.py`` prove every check
rejects a wrong answer.

Why a few lines of our own rather than otter-grader or nbgrader: those grade assignments
against fixed expected values kept beside the notebook. Our checks compare the learner's code
with the right computation on the learner's *own* data (synthetic, HAM10000 or a download:
the expected numbers differ), they must run in a notebook opened alone on Colab, and a
learner wants a hint, not a score.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import LesionlibError


class NotRight(LesionlibError):
    """The answer is not right yet; the message says what to look at."""


def unanswered(*values: Any) -> bool:
    """Whether any answer is still the placeholder (``...`` or ``None``): then the check says
    so and passes."""
    if any(value is Ellipsis or value is None for value in values):
        print("Not answered yet: write your code in the cell above, run it, then run this check "
              "again. (The solution is folded below.)")
        return True
    return False


def require(condition: bool, hint: str) -> None:
    """Raise :class:`NotRight` with ``hint`` unless ``condition`` holds."""
    if not condition:
        raise NotRight(hint)


def passed(message: str) -> None:
    """Say that the answer is right, and what it shows."""
    print(f"✓ Right. {message}")


def results_of(function: Any, inputs: list, name: str,
               shown: Callable[[Any], str] = repr) -> list | None:
    """The learner's ``function`` applied to each input; None (and "not answered yet") while it
    is the placeholder, a function whose body is ``...`` and so returns None for everything.
    ``shown`` names an input in the hint when the function fails on it."""
    if not callable(function):
        if not unanswered(function):
            raise NotRight(f"`{name}` should be a function: `def {name}(...):` and its body.")
        return None
    results = []
    for value in inputs:
        try:
            results.append(function(value))
        except Exception as error:  # the learner's code: say where it failed, not how to fix it
            raise NotRight(f"Your function raised {type(error).__name__} ({error}) for "
                           f"{shown(value)}.") from None
    if all(result is None or result is Ellipsis for result in results):
        unanswered(None)
        return None
    return results
