"""Name the breed in photos with an exported model: python -m pets.predict MODEL IMAGE [IMAGE ...]"""
import argparse
import pickle
import sys

from pets.data.images import ImageLoadError
from pets.export import load_learner


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m pets.predict', description=__doc__)
    parser.add_argument('model', help='a file written by learn.export / python -m pets.run (model.pth)')
    parser.add_argument('images', nargs='+')
    parser.add_argument('--top', type=int, default=3, help='how many breeds to list per image')
    args = parser.parse_args(argv)
    try:
        predictor = load_learner(args.model)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as error:
        print(f"error: cannot load {args.model}: {error}", file=sys.stderr)
        return 2
    status = 0
    for image in args.images:
        try:
            probabilities = predictor.predict_files([image])[0]
        except ImageLoadError as error:
            print(f"{image}: not a readable image ({error})", file=sys.stderr)
            status = 2
            continue
        top = probabilities.topk(min(args.top, len(probabilities)))
        print(f"{image}: " + ', '.join(f"{predictor.vocab[int(i)]} {float(p):.1%}" for p, i in zip(*top)))
    return status


if __name__ == '__main__':
    sys.exit(main())
