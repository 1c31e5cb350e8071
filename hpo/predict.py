"""``python -m hpo.predict MODEL --support DIR --images DIR_OR_FILES... [--csv OUT]`` (also ``fewshot-predict``):
classify unlabelled images.

The support folder holds one folder of labelled images per class (``DIR/<class>/<images>``); each image of
``--images`` (files, or folders whose image files are all taken) is classified among those classes by the
model, its images going through the model's own preprocessing. For each image it prints the predicted
class, its probability, and the runner-up; ``--csv OUT`` writes the same table, once every image is read.

Exit codes: 0 done, 2 bad input (one ``error:`` line; nothing is written), 1 the tracking server failed midway.
"""
from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any

from hpo.config import resolve_device
from hpo.model_commands import open_model, parser, run_command
from learners.data import DataError
from learners.files import write_atomically
from learners.inference import image_files, probabilities, read_support

COLUMNS = ("image", "predicted", "probability", "runner_up", "runner_up_probability")


def parse_args(argv: list[str] | None) -> Any:
    made = parser("python -m hpo.predict", "classify unlabelled images against a labelled support folder")
    made.add_argument("--support", type=Path, required=True, metavar="DIR", help="DIR/<class>/<images>")
    made.add_argument("--images", type=Path, nargs="+", required=True, metavar="DIR_OR_FILE",
                      help="image files, or folders of them")
    made.add_argument("--csv", type=Path, metavar="OUT", help="also write the table to this CSV file")
    return made.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_command(lambda: _predict(args))


def _predict(args: Any) -> None:
    model = open_model(args.model, args.tracking_uri)
    if args.csv is not None and not args.csv.parent.is_dir():
        raise DataError(f"--csv {args.csv}: the folder {args.csv.parent} does not exist")
    preprocessing = model.trained_on.preprocessing
    classes, support = read_support(args.support, preprocessing)
    files = _images(args.images)
    learner = model.build(resolve_device(args.device))
    learner.check_ways(len(classes))
    probs = probabilities(learner, preprocessing, support.images, support.labels, preprocessing.read_all(files),
                          len(classes))
    top = probs.topk(2, dim=-1)
    rows = [(str(path), classes[best[0]], f"{p[0]:.4f}", classes[best[1]], f"{p[1]:.4f}")
            for path, best, p in zip(files, top.indices.tolist(), top.values.tolist())]
    if args.csv is not None:
        _write_csv(args.csv, rows)
    width = max(len(row[0]) for row in rows)
    print(f"{'image':<{width}}  predicted (probability)  runner-up (probability)")
    for image, predicted, probability, runner_up, runner_probability in rows:
        print(f"{image:<{width}}  {predicted} ({probability})  {runner_up} ({runner_probability})")


def _images(paths: list[Path]) -> list[Path]:
    """The image files named, folders expanded to their image files (sorted)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = image_files(path)
            if not found:
                raise DataError(f"--images {path}: the folder has no images")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"--images {path}: no such file or folder")
    return files


def _write_csv(path: Path, rows: list[tuple[str, ...]]) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    try:
        write_atomically(path, lambda handle: handle.write(text.getvalue().encode()))
    except OSError as e:
        raise DataError(f"--csv {path}: {e.strerror or e}") from None


if __name__ == "__main__":
    sys.exit(main())
