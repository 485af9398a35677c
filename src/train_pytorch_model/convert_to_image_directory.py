"""Convert to Image Directory: turn a folder of images into the designer's ImageDirectory
(designer-formats.md section 2), byte-compatible with what the designer module writes.

    python -m train_pytorch_model.convert_to_image_directory --input-dataset DIR --output-dataset DIR

Accepted inputs: an ImageFolder tree (one subfolder per class), a flat folder of images (unlabelled), a COCO
folder (one json with 'images' and 'annotations' beside the images), an ImageDirectory, or a folder holding one
.zip/.tar(.gz/.tgz/.bz2/.xz) archive of any of those (suffixes in any case).

What differs from the designer module (designer-formats.md section 7, items 6, 11, 12, 13, 14):
- the input is only read: archives are extracted into a temporary folder, '__MACOSX' is skipped, not deleted;
- images at the top level beside class folders are an error that says so, instead of being dropped;
- a tree with a single subfolder (a zipped folder of images) is converted as unlabelled images, not as a
  one-class dataset named after the folder;
- flat folders are listed in sorted order, so ids are the same on every file system;
- every image is decoded with PIL; unreadable ones are skipped and named in the log;
- COCO: exactly one COCO json is accepted (several is an error, not a directory-order lottery), its
  categories are kept, its images are checked, and a file whose annotations all carry only a category becomes
  COCO_classification with a 'category' column, which Train PyTorch Model can train on.

The listing (formats/dataset_listing.py) is also how Score Image Model reads folders that are not ImageDirectories,
as the designer's own Score module does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from .cli import run_cli
from .formats.dataset_listing import SUBJECT, ImageTable, list_dataset, write_image_directory
from .output.publish import check_output_folder
from .settings import path_argument


def convert(input_dataset: str | Path, output_dataset: str | Path) -> ImageTable:
    check_output_folder(
        Path(output_dataset), {"input_dataset": Path(input_dataset)}, subject="Output dataset", kind="ImageDirectory"
    )
    with tempfile.TemporaryDirectory(prefix="convert-to-image-directory-") as scratch:
        table = list_dataset(input_dataset, SUBJECT, Path(scratch), check=True)
        write_image_directory(table, Path(output_dataset))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="train_pytorch_model.convert_to_image_directory", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--input-dataset", required=True, type=path_argument, help="ImageFolder, flat, COCO or archive folder"
    )
    parser.add_argument("--output-dataset", required=True, type=path_argument, help="output folder (ImageDirectory)")

    def body() -> None:
        args = parser.parse_args(argv)
        table = convert(args.input_dataset, args.output_dataset)
        labels = table.annotation_column
        kind = labels["properties"]["annotation_type"] if labels else "unlabelled"
        print(
            f"{len(table.records)} images ({table.layout}, {kind}) written to {args.output_dataset}; "
            f"{len(table.skipped)} skipped."
        )

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
