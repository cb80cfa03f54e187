"""lesionlib: the course's steps, for a terminal or a script.

Every command reads the LESIONLIB_* environment variables, as the notebooks do
(see the README): LESIONLIB_PROFILE, LESIONLIB_DATA_SOURCE, LESIONLIB_BACKBONE,
LESIONLIB_KERAS_WEIGHTS, LESIONLIB_EXTERNAL_SOURCE, LESIONLIB_HOME; or an unpacked workshop
pack (pack, unpack).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import DISCLAIMER, LesionlibError, __version__
from .dataset import prepare
from .settings import PROFILES, home_of, load_settings


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


def printable(text: str) -> str:
    """``text`` as valid Unicode: the bytes of a file name that are not UTF-8 (held by Python
    as lone surrogates) shown as ``\\xff`` escapes, so JSON and text output stay valid UTF-8."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that no file name decoded into
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _printable_record(record: dict) -> dict:
    return {key: printable(value) if isinstance(value, str) else value for key, value in record.items()}


def _predict(args: argparse.Namespace) -> int:
    from .inference import ExportedModel, predict_files

    model = ExportedModel(args.model or load_settings().model_dir)
    if hasattr(sys.stdout, "reconfigure"):  # a file name that is not valid text must not stop us
        sys.stdout.reconfigure(errors="backslashreplace")
    total = failed = 0
    for record in predict_files(model, args.images):  # each line as soon as it is known
        record = _printable_record(record)
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


def _serve(args: argparse.Namespace) -> int:
    from . import page

    folder = args.page or page.folder(load_settings())
    server = page.server(folder, args.port)
    host, port = server.server_address[:2]
    print(f"Serving {folder} at http://{host}:{port}/ (only this computer can open it; Ctrl+C stops).\n"
          "The page runs the model in your browser: an image you give it never leaves your computer.\n"
          + DISCLAIMER, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _pack(args: argparse.Namespace) -> int:
    from . import packs

    env = {**os.environ, **({"LESIONLIB_PROFILE": args.profile} if args.profile else {})}
    settings = load_settings(env)
    info = packs.make(settings, args.archive, progress=not args.quiet)
    size = args.archive.stat().st_size / 1e6
    external = f"{info['external']} {info['external_counts']}" if info["external"] else "no external source"
    several = isinstance(info["data"], list)  # several training collections: counts of each
    collections = "; ".join(f"{name} {counts}" for name, counts in (
        info["counts"].items() if several else [(info["data"], info["counts"])]))
    print(f"{args.archive}: {size:.1f} MB, profile {info['profile']}, {collections}, "
          f"{external}, {info['backbone']}")
    print("On each laptop, in the course's folder: lesionlib unpack " + args.archive.name)
    return 0


def _unpack(args: argparse.Namespace) -> int:
    from . import packs

    home = home_of(os.environ)  # not load_settings(): the pack in place may be the broken one
    info, changed = packs.unpack(args.archive, home)
    print(("Unpacked" if changed else "Already unpacked, nothing to do:") + f" {args.archive} into "
          f"{home / 'pack'} (profile {info['profile']}, made {info['made']}).")
    settings = load_settings()
    for key, value in settings.as_table().items():
        print(f"{key:>17}: {value}")
    if settings.profile != info["profile"]:
        print(f"The pack is not in use: it was made for the {info['profile']} profile and "
              f"LESIONLIB_PROFILE is {settings.profile}.", file=sys.stderr)
    elif settings.pack is None:
        print("The pack is not in use: LESIONLIB_DATA_SOURCE, LESIONLIB_BACKBONE and "
              "LESIONLIB_EXTERNAL_SOURCE are all set. Unset them to use it.", file=sys.stderr)
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
    serve = commands.add_parser(
        "serve", help="serve notebook 05's web page, which runs the model in the browser",
        description="Serve build/page/ (written by notebook 05) on http://127.0.0.1: a static page "
                    "that runs the exported TFLite model in the browser with LiteRT.js. Images "
                    "given to it stay in the browser. " + DISCLAIMER)
    serve.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free port")
    serve.add_argument("--page", type=Path, default=None,
                       help="the page's folder (default: build/page under LESIONLIB_HOME)")
    serve.set_defaults(run=_serve)
    pack = commands.add_parser(
        "pack", help="put the data and the network into one zip for laptops without internet",
        description="Collect the images as notebook 01 does (download or import, check, choose), "
                    "then write them, notebook 06's external collection if one is set, and the "
                    "backbone network into one zip with a checksum of every file.")
    pack.add_argument("archive", type=Path, metavar="OUT.zip")
    pack.add_argument("--profile", choices=PROFILES, help="the profile to pack for (default: "
                      "LESIONLIB_PROFILE, else workshop)")
    pack.add_argument("--quiet", action="store_true", help="no progress bars")
    pack.set_defaults(run=_pack)
    unpack = commands.add_parser(
        "unpack", help="check a pack and put it where the notebooks look (LESIONLIB_HOME/pack/)",
        description="Check every file of a pack made by `lesionlib pack` against its checksum and "
                    "unpack it into LESIONLIB_HOME/pack/, where the settings find it: the course "
                    "then runs with no network. A damaged pack is refused and changes nothing; "
                    "unpacking the same pack again does nothing.")
    unpack.add_argument("archive", type=Path, metavar="PACK.zip")
    unpack.set_defaults(run=_unpack)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except LesionlibError as error:
        print(f"lesionlib: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
