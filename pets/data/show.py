"""Looking at the data: show_batch draws decoded images with their labels (matplotlib)."""
import math

import torch


def images_for_display(x):
    """A batch (N, 3, H, W) as (N, H, W, 3) floats in [0, 1], whatever the batch transforms left it as.

    uint8 batches are scaled; a normalised batch (values outside [0, 1]) is stretched per image back to
    [0, 1] for display, since the loader does not know the mean and std the learner will use.
    """
    x = x.detach().cpu()
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    if x.min() < 0 or x.max() > 1:
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        high = x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - low) / (high - low).clamp_min(1e-8)
    return x.clamp(0, 1).permute(0, 2, 3, 1)


def show_images(images, titles=None, nrows=None, ncols=None, figsize=None, colors=None, fontsize=None):
    """A matplotlib figure of images (N, 3, H, W) in a grid, with optional titles (in `colors`, one per
    image, and `fontsize`). Returns the figure."""
    import matplotlib.pyplot as plt

    pixels = images_for_display(images)
    n = len(pixels)
    ncols = ncols or min(n, 3)
    nrows = nrows or math.ceil(n / ncols)
    n = min(n, nrows * ncols)
    figsize = figsize or (3 * ncols, 3 * nrows)
    figure, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    for i, axis in enumerate(axes.flat):
        axis.axis('off')
        if i < n:
            axis.imshow(pixels[i].numpy())
            if titles is not None:
                style = {'color': colors[i]} if colors else {}
                axis.set_title(titles[i], fontsize=fontsize, **style)
    figure.tight_layout()
    return figure


def show_batch(loader, nrows=3, ncols=3, figsize=None):
    """The first nrows x ncols images of a batch of `loader`, titled with their labels."""
    batch = loader.one_batch()
    x, y = batch if isinstance(batch, tuple) else (batch, None)
    x = loader.decode(x) if hasattr(loader, 'decode') else x
    n = min(len(x), nrows * ncols)
    titles = None if y is None else [loader.vocab[int(i)] for i in y[:n]]
    return show_images(x[:n], titles, nrows=math.ceil(n / ncols), ncols=ncols, figsize=figsize)
