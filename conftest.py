"""Run from the repository root, pytest never touches the learner's own data/ and build/.

Unless the LESIONLIB_* variables say otherwise, tests and notebooks run under the synthetic
``smoke`` profile in a temporary home. ``make test`` sets them explicitly for each pass.
"""

import os
import tempfile


def pytest_configure(config) -> None:
    os.environ.setdefault("LESIONLIB_PROFILE", "smoke")
    if not os.environ.get("LESIONLIB_HOME"):
        os.environ["LESIONLIB_HOME"] = tempfile.mkdtemp(prefix="lesion-course-test-")
