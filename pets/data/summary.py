"""DataBlock.summary: build one sample and one batch step by step, printing what each step gives.

The chapter's debugging tool. A DataBlock's mistakes (a pattern that does not match, images of different
sizes without a Resize) only show when a batch is built; this builds one slowly, in this process, and
stops at the step that fails with what went wrong and what to change. The failure is raised, not hidden.
"""
import torch
from PIL import Image

from pets.data.loader import load_item, stack_images
from pets.data.images import image_to_tensor, load_image
from pets.data.items import Categorize


class SummaryError(RuntimeError):
    """The step of DataBlock.summary that failed; the message says which, why, and the fix."""


def describe(x):
    """A short description of a value: its type and size."""
    if isinstance(x, Image.Image):
        return f"PIL image of size {x.width}x{x.height}, mode {x.mode}"
    if isinstance(x, torch.Tensor):
        return f"{str(x.dtype).replace('torch.', '')} tensor of shape {tuple(x.shape)} on {x.device}"
    if isinstance(x, tuple):
        return '(' + ', '.join(describe(v) for v in x) + ')'
    if isinstance(x, list):
        return f"list of {len(x)}: [{', '.join(repr(v) for v in x[:2])}{', ...' if len(x) > 2 else ''}]"
    return f"{x!r} ({type(x).__name__})"


def _name(f):
    return getattr(f, '__name__', None) or repr(f)


def _apply(step_name, f, x, fix, indent='    '):
    print(f"{indent}applying {step_name} gives")
    try:
        result = f(x)
    except Exception as error:
        print(f"{indent}  Error! {type(error).__name__}: {error}")
        raise SummaryError(f"summary stopped at '{step_name}': {type(error).__name__}: {error}\n  fix: {fix}") \
            from error
    print(f"{indent}  {describe(result)}")
    return result


def summary(block, source, bs=4):
    """Prints the trace of building one sample and one batch from source; returns the batch (x, y)."""
    print(f"Collecting items from {source}")
    items = _apply(f"get_items ({_name(block.get_items)})", lambda s: list(block.get_items(s)), source,
                   "pass the folder that holds the images to summary/dataloaders", indent='  ')
    print(f"Found {len(items)} items")
    if not items:
        raise SummaryError(f"get_items found no items in {source}\n  fix: point it at the folder of images")
    train_idx, valid_idx = _apply(f"splitter ({block.splitter!r})", block.splitter, items,
                                  "check the splitter's arguments (valid_pct in [0, 1))", indent='  ')
    print(f"2 datasets of sizes {len(train_idx)},{len(valid_idx)}")
    labels = _apply(f"get_y ({block.get_y!r}) to every item", lambda xs: [block.get_y(x) for x in xs], items,
                    "make get_y's pattern match every file name, or leave the files it cannot label out",
                    indent='  ')
    vocab = Categorize().setup(labels)
    print(f"Categorize: {len(vocab.vocab)} classes {vocab.vocab[:5]}{' ...' if len(vocab.vocab) > 5 else ''}")

    first = [items[i] for i in train_idx[:bs]] or items[:bs]
    print("\nBuilding one sample")
    print("  Pipeline: load_image -> image_to_tensor" + ''.join(f" -> {tfm!r}" for tfm in block.item_tfms))
    print(f"    starting from\n      {first[0]}")
    generator = torch.Generator().manual_seed(0)
    x = _apply("load_image", lambda p: load_image(block.get_x(p) if block.get_x else p), first[0],
               "the file is not a readable image: remove it (verify_images lists them all)")
    x = _apply("image_to_tensor", image_to_tensor, x, "")
    for tfm in block.item_tfms:
        x = _apply(repr(tfm), lambda image: tfm(image, train=True, generator=generator), x,
                   "check this item transform's arguments; item transforms take and return uint8 (3, H, W) tensors")
    print(f"  Pipeline: {_name(block.get_y)} -> Categorize")
    print(f"    starting from\n      {first[0]}")
    label = _apply(repr(block.get_y), block.get_y, first[0], "make get_y's pattern match this file name")
    y = _apply("Categorize", vocab.encode, label, "the label must be one of the vocabulary")
    print(f"\nFinal sample: {describe((x, y))}")

    print(f"\nBuilding one batch of {len(first)}")
    # The other samples as the loaders build them (load_item: draft decoding included).
    samples = [(x, y)] + [(load_item(block.get_x(item) if block.get_x else item, block.item_tfms, train=True, seed=i),
                           vocab.encode(block.get_y(item))) for i, item in enumerate(first[1:], start=1)]
    print("  Collating items in a batch")
    images = _apply("stack", stack_images, [s[0] for s in samples],
                    "give every image the same size with an item transform, e.g. item_tfms=Resize(460)")
    labels = torch.tensor([s[1] for s in samples])
    print(f"\n  Applying batch_tfms to the batch: {[_name(t) for t in block.batch_tfms] or 'none'}, "
          f"then uint8 -> float in [0, 1]")
    for tfm in block.batch_tfms:
        images = _apply(_name(tfm), lambda b: tfm(b, train=True), images, "check this batch transform")
    if images.dtype == torch.uint8:
        images = _apply("uint8 -> float", lambda b: b.float().div_(255), images, "")
    return images, labels
