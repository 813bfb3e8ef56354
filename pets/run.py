"""Train a pet-breed classifier: python -m pets.run [options]

With no options: the 370-image sample shipped with the package, EfficientNet-Lite0 pretrained on
ImageNet, presizing to 256 and one-pass augmentation to 224, then this recipe:
  1. the head alone, BatchNorm of the body frozen whole (statistics too): --freeze-epochs one-cycles;
  2. everything but the body's first layer group, BatchNorm still frozen, discriminative rates
     slice(lr / 10 / lr_mult, lr / 10) with lr_mult 100: --epochs one-cycles; the head has already learnt,
     so the body takes small steps and keeps its ImageNet features. pets/recipes.py holds both recipes and
     why each of their numbers.
Eight images per class are too few to re-estimate BatchNorm statistics; keeping ImageNet's is what works
(fastai's fine_tune keeps BatchNorm training: --recipe fastai runs exactly that instead).
The network computes in bfloat16 where the hardware does natively (--precision auto; pets.precision), the
sample's images are decoded once and kept in memory, and each batch reuses the memory the last one freed
(pets.allocator).
Prints the epoch table, the final error rate and the most confused breeds, and writes to --out the table
(CSV, Markdown) and plots: loss, schedule, confusion matrix, top losses, a batch.
The book's recipe on the full data set: python -m pets.run --data pets --arch resnet34 --recipe fastai

Crashes and bad input: a checkpoint is written to --out after every epoch (atomically); after a crash or a
kill, the same command with --resume continues after the last completed epoch, to the same result. Files
that cannot be used (unreadable, not images, names the --pattern does not match) are left out, one line
each on the screen and in --out/left_out.txt. Exit codes: 0 done, 2 a bad option or input (one line, no
traceback), 1 training failed (a non-finite loss, out of memory; the last checkpoint stays), 130
interrupted with Ctrl-C (the checkpoint stays too).
"""
import argparse
import os
import random
import re
import sys
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from minigrad.functional import cross_entropy
from pets.allocator import keep_freed_memory
from pets.augment import aug_transforms
from pets.checkpoint import CheckpointMismatchError, SaveCheckpoint
from pets.data.block import CategoryBlock, DataBlock, ImageBlock
from pets.data.loader import UnreadableImageWarning
from pets.data.download import KNOWN_ARCHIVES, DownloadError, URLs, untar_data
from pets.data.download import data_folder as data_sets_folder
from pets.data.images import Resize
from pets.data.items import RandomSplitter, RegexLabeller, get_image_files, parent_label
from pets.distributed import (broadcast, init_distributed, launched_by_torchrun, local_rank_zero_first,
                              rank, world_size)
from pets.interpret import ClassificationInterpretation
from pets.learner import cnn_learner
from pets.metrics import accuracy, error_rate
from pets.models import ARCHS, PretrainedWeightsError
from pets.precision import PRECISIONS, choose_precision
from pets.recipes import RECIPES
from pets.report import LeftOutReport, save_figure, write_results


# The options a recipe brings its own defaults for (pets.recipes.Recipe's fields of the same names).
RECIPE_SETTINGS = ('freeze_epochs', 'epochs', 'lr', 'presize', 'bs')


class HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """--help lists each option's default, but where its help already says it in words."""

    def _get_help_string(self, action):
        if action.default is None or 'default' in (action.help or ''):
            return action.help
        return super()._get_help_string(action)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='python -m pets.run', description=__doc__.split('\n')[0],
                                     formatter_class=HelpWithDefaults)
    parser.add_argument('--data', default='sample', help="'sample' (default), 'pets' (download), or a folder")
    parser.add_argument('--labels', default='auto', choices=['auto', 'pattern', 'folder'],
                        help="where the labels come from: the file name (--pattern), the folder each image sits in "
                             "(a folder per class), or auto: folders when the images sit in two or more of them")
    parser.add_argument('--pattern', default=r'(.+)_\d+.jpg$', help='regex whose group 1 is the label')
    parser.add_argument('--arch', default='efficientnet_lite0', choices=sorted(ARCHS), help='the network')
    parser.add_argument('--pretrained', action=argparse.BooleanOptionalAction, default=True,
                        help="start from the network's ImageNet weights")
    ours, book = RECIPES['frozen-bn'], RECIPES['fastai']
    book_run = ' '.join(f"--{option.replace('_', '-')} {getattr(book, option):g}" for option in RECIPE_SETTINGS)
    parser.add_argument('--recipe', default='frozen-bn', choices=sorted(RECIPES),
                        help="frozen-bn: this script's (see above); fastai: the book's fine_tune (pets.recipes), "
                             f"which brings the book's run: {book_run}")
    parser.add_argument('--epochs', type=at_least(0), default=None,
                        help=f"one-cycle epochs of the whole network (default: the recipe's, {ours.epochs} for "
                             f"frozen-bn)")
    parser.add_argument('--freeze-epochs', type=at_least(0), default=None,
                        help=f"one-cycle epochs of the head alone, first (default: the recipe's, {ours.freeze_epochs} "
                             f"for frozen-bn)")
    parser.add_argument('--lr', type=learning_rate, default=None,
                        help=f"the head's peak learning rate, or 'find' for lr_find's valley suggestion (default: "
                             f"the recipe's, {ours.lr:g} for frozen-bn)")
    parser.add_argument('--precision', default='auto', choices=PRECISIONS,
                        help="what the network computes in (pets.precision): auto takes bfloat16 where the "
                             "hardware has it (CPUs with avx512_bf16 or AMX, GPUs since Ampere), float16 with loss "
                             "scaling on other GPUs, float32 on other CPUs")
    parser.add_argument('--fp16', dest='precision', action='store_const', const='fp16',
                        help='the same as --precision fp16 (bfloat16 on a CPU)')
    parser.add_argument('--label-smoothing', type=fraction, default=0.0,
                        help="cross-entropy's label smoothing eps (0: plain cross-entropy)")
    parser.add_argument('--lr-mult', type=positive, default=None,
                        help="unfrozen phase: the head trains lr_mult times faster than the first layer group "
                             "(default: the recipe's, 100 for both)")
    parser.add_argument('--keep-opt-state', action='store_true',
                        help="phase 2 continues phase 1's optimizer state (Adam's step counts and moments) instead "
                             "of starting afresh, as fastai's unfreeze does")
    parser.add_argument('--tta', type=at_least(0), default=0, metavar='N',
                        help='also score the validation set with test-time augmentation over N views (0: not)')
    parser.add_argument('--bs', type=at_least(1), default=None,
                        help="images per batch, per process: under torchrun a step sees bs x processes images "
                             f"(default: the recipe's, {ours.bs} for frozen-bn)")
    parser.add_argument('--sync-bn', action='store_true',
                        help='under torchrun on GPUs: BatchNorm statistics over all processes (SyncBatchNorm)')
    parser.add_argument('--presize', type=at_least(1), default=None,
                        help="each image is first resized (centre-cropped for validation) to this many pixels "
                             f"(default: the recipe's, {ours.presize} for frozen-bn)")
    parser.add_argument('--size', type=at_least(1), default=224, help='the side of the images the model sees')
    parser.add_argument('--min-scale', type=scale, default=0.75,
                        help="the random-resized crop's smallest share of the image's area, in (0, 1]")
    parser.add_argument('--crop-ratio', type=positive, nargs=2, default=(1.0, 1.0), metavar=('LOW', 'HIGH'),
                        help="the random-resized crop's aspect ratio (width / height) is drawn between these: "
                             "1 1 (default) crops squares as fastai; 0.75 1.333 is torchvision's, stretched")
    parser.add_argument('--seed', type=int, default=42,
                        help='seeds the split, the order, the augmentation and the head: a CPU run repeats exactly')
    parser.add_argument('--deterministic', action='store_true',
                        help="deterministic algorithms only (torch.use_deterministic_algorithms): on a GPU, "
                             "repeatable runs at some cost in speed")
    parser.add_argument('--resume', action='store_true',
                        help="continue after the last epoch checkpointed in --out (same data and options)")
    parser.add_argument('--workers', type=at_least(0), default=None,
                        help='decoding processes per training process (default: on the CPU, none when the decoded '
                             'images fit in memory, as the sample does: each is decoded once, here; on a GPU, and '
                             'for larger data sets, the cores shared among the training processes)')
    parser.add_argument('--device', default=None, help="'cpu', 'cuda' (default: the GPU if there is one)")
    parser.add_argument('--out', default='pets-output', help='folder for the results')
    args = parser.parse_args(argv)
    recipe = RECIPES[args.recipe]
    for option in RECIPE_SETTINGS:
        if getattr(args, option) is None:
            setattr(args, option, getattr(recipe, option))
    if args.epochs == 0 and args.freeze_epochs == 0:
        parser.error('--epochs and --freeze-epochs are both 0: nothing would train; give one of them an epoch')
    if args.crop_ratio[0] > args.crop_ratio[1]:
        parser.error(f"--crop-ratio {args.crop_ratio[0]:g} {args.crop_ratio[1]:g}: give the lower ratio first")
    return args


def at_least(minimum):
    """An argparse type: a whole number >= minimum."""
    def whole_number(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}: give {minimum} or more")
        return value
    return whole_number


def positive(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def scale(text):
    value = positive(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text} is above 1: it is a share of the image's area, in (0, 1]")
    return value


def learning_rate(text):
    if text == 'find':
        return text
    try:
        return positive(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number above 0 nor 'find'") from None


def fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


def check_device(device):
    """A UserError unless `device` is one torch can use here (None: the default choice)."""
    if device is None:
        return
    try:
        device = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device}: not a device; use cpu, cuda or cuda:N") from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is visible to torch here; use --device cpu, or leave "
                        f"--device out to take a GPU when there is one") from None
    if device.type == 'cuda' and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: there are {torch.cuda.device_count()} GPUs (cuda:0 to "
                        f"cuda:{torch.cuda.device_count() - 1})")


def data_folder(data):
    if data == 'sample':
        return untar_data(URLs.PETS_SAMPLE) / 'images'
    if data == 'pets':
        try:
            return untar_data(URLs.PETS) / 'images'
        except DownloadError as error:
            archive = data_sets_folder() / f"{KNOWN_ARCHIVES[URLs.PETS].name}.tgz"
            raise UserError(f"--data pets: the download failed ({error}). Connect to the internet and run again "
                            f"(a partial download resumes), or put the archive at {archive}") from None
    folder = Path(data)
    if not folder.is_dir():
        raise UserError(f"--data {data}: no such folder; use 'sample', 'pets' or a folder of images")
    return folder


class UserError(Exception):
    """A bad option or input: reported in one line, exit code 2."""


class TrainingFailed(Exception):
    """Training stopped (a non-finite loss, out of memory): reported in one line, exit code 1."""


def labelled_items(folder, pattern, labels='auto'):
    """The image files of folder that get a label, the labeller, and the files left out ({file: reason}).

    labels: 'pattern' takes group 1 of the regex `pattern` on each file name (RegexLabeller: the chapter's
    way); 'folder' the name of the folder each image sits in (parent_label: my_pets/cat/IMG_1.jpg -> 'cat');
    'auto' takes folders when every image sits in a sub-folder and there are two or more of them, else the
    pattern. Raises UserError when that gives no labels, or a single class.
    """
    files = get_image_files(folder)
    if not files:
        raise UserError(f"no image files in {folder}: is it the folder that holds the images?")
    if labels == 'auto':
        parents = {f.parent for f in files}
        labels = 'folder' if len(parents) >= 2 and Path(folder) not in parents else 'pattern'
    if labels == 'folder':
        classes = {parent_label(f) for f in files}
        if len(classes) < 2:
            raise UserError(f"--labels folder finds one class only ({classes.pop()!r}) in {folder}: put each "
                            f"class's images in a folder of its own (my_pets/cat/..., my_pets/dog/...)")
        return files, parent_label, {}
    try:
        labeller = RegexLabeller(pattern)
    except re.error as error:
        raise UserError(f"--pattern {pattern!r} is not a regular expression ({error})") from None
    if labeller.pattern.groups < 1:
        raise UserError(f"--pattern {pattern!r} has no group: put the label in parentheses, e.g. '(.+)_\\d+.jpg$'")
    named = {}
    for f in files:
        try:
            named[f] = labeller(f.name)
        except ValueError:  # no match: the file is left out, and reported
            continue
    named = {f: label for f, label in named.items() if label}
    if not named:
        raise UserError(f"--pattern {pattern!r} labels none of the {len(files)} files in {folder} "
                        f"(e.g. {files[0].name!r}): its group 1 must capture the class in the file name")
    classes = set(named.values())
    if len(classes) < 2:
        raise UserError(f"--pattern {pattern!r} finds one class only ({classes.pop()!r}) in {folder}: a "
                        f"classifier needs two or more; check the pattern's group (or, for a folder per class, "
                        f"use --labels folder)")
    left_out = {f: f"{f}: the name does not match --pattern {pattern!r}" for f in files if f not in named}
    return list(named), named.__getitem__, left_out




def seed_everything(seed, deterministic):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # cuDNN times its kernels for each new shape and keeps the fastest, unless runs must repeat exactly.
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')  # what cuBLAS needs to be deterministic
        torch.use_deterministic_algorithms(True)


def main(argv=None, cbs=()):
    """Runs the script with the options argv (default: sys.argv); cbs: more learner callbacks.
    Under torchrun, every process runs it; they train data-parallel, and rank 0 alone prints and writes."""
    import matplotlib
    matplotlib.use('Agg')  # the script writes plots to files: no window, whatever the machine has
    args = parse_args(argv)
    check_device(args.device)
    if args.presize < args.size:
        print(f"warning: --presize {args.presize} is below --size {args.size}: every image is enlarged before "
              f"augmentation and loses detail; presize above the size (the default is 256 for 224)", file=sys.stderr)
    if args.sync_bn and not (torch.cuda.is_available() and torch.device(args.device or 'cuda').type == 'cuda'):
        raise UserError("--sync-bn needs GPUs: torch's SyncBatchNorm has no CPU kernel; leave --sync-bn out")
    if launched_by_torchrun():
        args.device = str(init_distributed(args.device))
    try:
        return run(args, cbs)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run(args, cbs):
    """The script's work for parsed options: data, learner, recipe, results (see the module docstring)."""
    is_main = rank() == 0
    say = print if is_main else (lambda *_, **__: None)
    # Each process its own random streams (augmentation, dropout); DDP starts every copy of the model from
    # rank 0's weights, and the split and the loaders' order take args.seed itself, the same everywhere.
    seed_everything(args.seed + rank(), args.deterministic)
    keep_freed_memory()  # each batch reuses the last one's memory instead of mapping it anew (pets.allocator)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    learn, checkpoint, report = build_learner(args, out, cbs)
    dls = learn.dls
    say(f"{len(dls.train_ds)} training and {len(dls.valid_ds)} validation images, {dls.c} classes; "
        f"{args.arch}, {'pretrained' if args.pretrained else 'from scratch'}, recipe {args.recipe}"
        + (f"; {world_size()} processes of batch size {args.bs}" if world_size() > 1 else ''))
    report.update(learn)
    say(f"precision {learn.precision} on {dls.device} ({choose_precision(dls.device, args.precision)[1]})")
    if args.resume:
        try:
            saved = learn.resume_from(checkpoint.path)
        except FileNotFoundError:
            raise UserError(f"--resume: no checkpoint in {out}; run without --resume to start") from None
        except CheckpointMismatchError as error:
            raise UserError(f"--resume: {error}") from None
        progress = saved['progress']
        say(f"resuming after epoch {progress['epoch']} of training phase {progress['fit_index'] + 1}")
        if args.lr == 'find':
            args.lr = saved['extra']['lr']  # the rate lr_find chose before the interruption
    if args.lr == 'find':
        # Under torchrun every process sweeps on its own (with its own random draws); rank 0's suggestion
        # is then everyone's, so that all train at one rate.
        learn.freeze(train_bn=args.recipe == 'fastai')
        args.lr = broadcast(learn.lr_find(show_plot=False).valley)
        say(f"lr_find suggests {args.lr:.2e} (valley)")
        if is_main:
            save_figure(learn.recorder.plot_lr_find(), out / 'lr_find.png')
    checkpoint.extra['lr'] = args.lr
    with warnings.catch_warnings(), learn.distrib_ctx(sync_bn=args.sync_bn):
        warnings.simplefilter('ignore', UnreadableImageWarning)  # the report prints them, one line each
        train(learn, args, checkpoint.path)
        interp = ClassificationInterpretation.from_learner(learn)  # validation gathered from all processes
    if is_main:
        final_error = learn.recorder.values[-1][2]
        n_valid = sum(Path(f) not in report.left_out for f in dls.valid_ds.items)  # every process's
        say(f"final error rate: {final_error:.4f} (accuracy {1 - final_error:.2%}) on {n_valid} images")
        if args.tta:
            tta_accuracy = accuracy(*learn.tta(n=args.tta))
            say(f"with test-time augmentation ({args.tta} views): tta accuracy {tta_accuracy:.2%}")
        # The model first: the plots below cannot lose it, whatever goes wrong in them.
        learn.export((out / 'model.pth').resolve())  # learn.path is where a relative path would go
        say(f"exported the model: python -m pets.predict {out / 'model.pth'} IMAGE...")
        say("most confused (actual, predicted, count):")
        for actual, predicted, count in interp.most_confused()[:8]:
            say(f"  {actual:<28} {predicted:<28} {count}")
        write_results(out, learn, interp, dls)
    return learn


def build_learner(args, out, cbs):
    """The data (labelled, split, presized, augmented) and the learner with its checkpoint and report."""
    with local_rank_zero_first():  # a download or copy of the data set happens once per machine
        folder = data_folder(args.data)
    items, label, left_out = labelled_items(folder, args.pattern, args.labels)
    report = LeftOutReport(out / 'left_out.txt', left_out)
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=lambda _: items,
                      splitter=RandomSplitter(seed=args.seed), get_y=label,
                      item_tfms=Resize(args.presize),
                      batch_tfms=aug_transforms(size=args.size, min_scale=args.min_scale, crop_ratio=args.crop_ratio))
    checkpoint = SaveCheckpoint(out / 'checkpoint.pth', extra={'lr': args.lr})
    try:
        dls = block.dataloaders(folder, bs=args.bs, num_workers=args.workers, device=args.device, seed=args.seed)
        loss_func = partial(cross_entropy, label_smoothing=args.label_smoothing) if args.label_smoothing else None
        learn = cnn_learner(dls, args.arch, metrics=error_rate, pretrained=args.pretrained, loss_func=loss_func,
                            cbs=[checkpoint, report, *cbs])
        learn.to_precision(choose_precision(dls.device, args.precision)[0])
    except (ValueError, FileNotFoundError, PretrainedWeightsError) as error:
        raise UserError(str(error)) from None
    return learn, checkpoint, report


def train(learn, args, checkpoint):
    """The recipe (pets.recipes); a failure becomes TrainingFailed, the checkpoint kept."""
    try:
        RECIPES[args.recipe].train(learn, args.freeze_epochs, args.epochs, args.lr, args.lr_mult,
                                   keep_optimizer_state=args.keep_opt_state)
    except (FloatingPointError, torch.OutOfMemoryError) as error:
        kept = (f"the checkpoint of the last completed epoch stays in {checkpoint}: add --resume to continue "
                f"from it" if Path(checkpoint).exists() else "no epoch had completed, so there is no checkpoint")
        raise TrainingFailed(f"{error}. {kept}") from None






def cli(argv=None):
    """The command line: main, with user errors and failures reported in one line and an exit code."""
    try:
        main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except TrainingFailed as error:
        print(f"training failed: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: the checkpoint of the last completed epoch, if one completed, stays in --out; "
              "the same command with --resume continues from it", file=sys.stderr)
        sys.exit(130)  # the shell's code for a process stopped by Ctrl-C


if __name__ == '__main__':
    cli()
