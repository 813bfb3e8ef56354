"""Name the breed in photos with an exported model: python -m pets.predict MODEL IMAGE_OR_FOLDER [...]

A folder stands for every image file under it (sub-folders too). One line per image; --csv also writes a
table. Exit codes: 0 all predicted, 2 a bad model file or option, or some image unreadable (the others
are still predicted).
"""
import argparse
import csv
import sys
import warnings
from pathlib import Path

import torch

from pets.data.loader import UnreadableImageWarning
from pets.data.items import get_image_files
from pets.inference import predictions
from pets.learner import load_learner


def expand(paths):
    """The image files to predict: each file as given, each folder's image files (recursively, sorted)."""
    files = []
    for path in map(Path, paths):
        files.extend(get_image_files(path) if path.is_dir() else [path])
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m pets.predict', description=__doc__.split('\n')[0])
    parser.add_argument('model', help='a file written by learn.export / python -m pets.run (model.pth)')
    parser.add_argument('images', nargs='+', help='image files, or folders of them')
    parser.add_argument('--top', type=int, default=3, help='how many breeds to list per image (default: 3)')
    parser.add_argument('--csv', metavar='FILE', help='also write one row per image: file, label, probability, '
                                                       'and the top breeds with theirs')
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error(f"--top {args.top}: list at least 1 breed")
    try:
        learn = load_learner(args.model, cpu=not torch.cuda.is_available())
    except (OSError, ValueError) as error:
        print(f"error: cannot load {args.model}: {error}", file=sys.stderr)
        return 2
    files = expand(args.images)
    if not files:
        print(f"error: no image files in {', '.join(args.images)}", file=sys.stderr)
        return 2
    # One pass over all the files, as validation prepares them; a file that cannot be read is left out of
    # the batch and named in dls.skipped, and each row says which file it is.
    dl = learn.dls.test_dl(files)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UnreadableImageWarning)  # reported below, one line each
        result = predictions(learn, dl)
    by_position = dict(zip(result.positions.tolist(), result.probabilities))
    vocab, rows, unreadable = learn.dls.vocab, [], 0
    for position, image in enumerate(files):
        if position not in by_position:
            print(f"{image}: not a readable image ({dl.skipped.get(Path(image), 'unreadable')})", file=sys.stderr)
            unreadable += 1
            continue
        top = by_position[position].topk(min(args.top, len(vocab)))
        ranked = [(vocab[int(i)], float(p)) for p, i in zip(*top)]
        print(f"{image}: " + ', '.join(f"{label} {p:.1%}" for label, p in ranked))
        rows.append([str(image), ranked[0][0], f"{ranked[0][1]:.6f}",
                     '; '.join(f"{label} {p:.6f}" for label, p in ranked)])
    if args.csv:
        with open(args.csv, 'w', newline='') as file:
            writer = csv.writer(file)
            writer.writerow(['file', 'label', 'probability', f'top {args.top}'])
            writer.writerows(rows)
    if unreadable:
        rest = '; the others were predicted' if unreadable < len(files) else ''
        print(f"{unreadable} of {len(files)} images could not be read (see above){rest}", file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
