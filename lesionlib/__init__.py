"""lesionlib: the helper library of the lesion-course notebooks.

Not a medical device. Nothing this library computes is a diagnosis.
"""

__version__ = "0.1.0"

DISCLAIMER = ("For teaching only: this is not a diagnosis and not medical advice. "
              "Anyone worried about a skin lesion should see a doctor.")


class LesionlibError(Exception):
    """A problem the learner can fix; its message says how. Notebooks show it without a traceback."""
