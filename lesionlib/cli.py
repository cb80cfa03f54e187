"""lesionlib: the course's steps, for a terminal or a script.

Every command reads the LESIONLIB_* environment variables, as the notebooks do
(see the README): LESIONLIB_PROFILE, LESIONLIB_DATA_SOURCE, LESIONLIB_BACKBONE, LESIONLIB_HOME.
"""

from __future__ import annotations

import argparse
import sys

from . import DISCLAIMER, LesionlibError, __version__
from .dataset import prepare
from .settings import load_settings


def _settings(_: argparse.Namespace) -> int:
    for key, value in load_settings().as_table().items():
        print(f"{key:>17}: {value}")
    return 0


def _data(args: argparse.Namespace) -> int:
    settings = load_settings()
    result = prepare(settings, progress=not args.quiet)
    counts = result.manifest["label"].value_counts()
    print(f"{len(result.manifest)} images from {result.source} ({result.layout}): "
          + ", ".join(f"{label} {count}" for label, count in counts.items()))
    print(f"manifest: {settings.manifest_path}")
    if len(result.rejected):
        print(f"{len(result.rejected)} files left out, listed in {settings.rejected_path}:")
        print(result.rejected.groupby("reason").size().to_string())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lesionlib", description=__doc__, epilog=DISCLAIMER,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"lesionlib {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("settings", help="print the settings in force").set_defaults(run=_settings)
    data = commands.add_parser(
        "data", help="collect the images and build the manifest (notebook 01)",
        description="Download (or import, or generate) the images of LESIONLIB_DATA_SOURCE, "
                    "check each one and write data/manifest.csv and data/train/<class>/.")
    data.add_argument("--quiet", action="store_true", help="no progress bars")
    data.set_defaults(run=_data)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except LesionlibError as error:
        print(f"lesionlib: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
