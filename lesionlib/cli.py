"""lesionlib: the course's steps, for a terminal or a script.

Every command reads the LESIONLIB_* environment variables, as the notebooks do
(see the README): LESIONLIB_PROFILE, LESIONLIB_DATA_SOURCE, LESIONLIB_BACKBONE, LESIONLIB_HOME.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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


def _predict(args: argparse.Namespace) -> int:
    from .inference import ExportedModel, predict_files

    model = ExportedModel(args.model or load_settings().model_dir)
    if hasattr(sys.stdout, "reconfigure"):  # a file name that is not valid text must not stop us
        sys.stdout.reconfigure(errors="backslashreplace")
    total = failed = 0
    for record in predict_files(model, args.images):  # each line as soon as it is known
        total += 1
        failed += "error" in record
        if args.json:
            print(json.dumps(record), flush=True)
        elif "error" in record:
            print(f"{record['image']}: not predicted: {record['error']}", flush=True)
        else:
            shares = ", ".join(f"{label} {p:.3f}" for label, p in record["probabilities"].items())
            print(f"{record['image']}: {record['label']}  ({shares})", flush=True)
    print(DISCLAIMER, file=sys.stderr if args.json else sys.stdout)  # JSON lines stay clean
    if failed:
        print(f"lesionlib: {failed} of {total} images could not be predicted", file=sys.stderr)
    return 1 if failed else 0


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
    predict = commands.add_parser(
        "predict", help="classify image files with an exported model (notebook 05)",
        description="Print each image's most probable class and the probability of every class, "
                    "from a model exported by notebook 05. A file that cannot be predicted gets "
                    "a line saying why; the others are still predicted, and the exit status is "
                    "1. " + DISCLAIMER)
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG, PNG or other image files")
    predict.add_argument("--model", type=Path, default=None,
                         help="an exported model folder (default: build/model under LESIONLIB_HOME)")
    predict.add_argument("--json", action="store_true",
                         help='one JSON object per image: {"image", "label", "probabilities"} '
                              'or {"image", "error"}')
    predict.set_defaults(run=_predict)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except LesionlibError as error:
        print(f"lesionlib: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
