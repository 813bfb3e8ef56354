"""warp: a batch of images read through one homography each, resampled ONCE, antialiased where it shrinks.

Read top to bottom: the input pixel each output pixel reads (the map and the perspective divide) -> how much
the map shrinks the image there, and how many sub-pixel samples that asks for -> supersample (the mean of
those samples) -> warp, the whole batch -> what is specific to torch.compile. sampling.py reads the pixels;
homographies.py builds the matrices; warp_triton.py is the same warp as a hand-written GPU kernel.
"""
import functools
import math

import torch

from minigrad.homographies import snapped_pixel_matrices, transform_grid
from minigrad.sampling import check_modes, eager_shortcuts, sample_pixels


def _input_pixels(pixel_maps, output_size, offsets):
    """Input pixel positions (px, py), each (N, T, Ho, Wo), that the output pixels (j, i), shifted by each
    of the T `offsets` (T, 2) (fractions of an output pixel), read through the pixel maps
    P = [[a, b, c], [d, e, f], [g, h, k]] (see homographies.snapped_pixel_matrices):
        px = (a j + b i + c) / w,  py = (d j + e i + f) / w,  w = g j + h i + k,
    each built as a row term plus a column term, so that the big arrays take one add each.
    """
    out_h, out_w = output_size
    dtype, device = pixel_maps.dtype, pixel_maps.device
    offsets = offsets.to(device=device, dtype=dtype)
    js = torch.arange(out_w, dtype=dtype, device=device).view(1, 1, 1, out_w) + offsets[:, 0].view(1, -1, 1, 1)
    is_ = torch.arange(out_h, dtype=dtype, device=device).view(1, 1, out_h, 1) + offsets[:, 1].view(1, -1, 1, 1)

    def row(r):  # P[r] . (j, i, 1), as (N, T, Ho, Wo)
        m = pixel_maps[:, r].view(-1, 3, 1, 1, 1)
        return (m[:, 0] * js + m[:, 2]) + m[:, 1] * is_

    px, py = row(0), row(1)
    # The perspective divide. Only where every bottom row is (0, 0, 1) is w = 1 everywhere: eager mode on
    # the CPU then skips it (a homography times a constant, 2.5 M, is the same map, with w = 2.5: it must divide).
    # Compiled code always divides: the divide fuses into the sampling loop.
    if not eager_shortcuts(pixel_maps) or not bool((pixel_maps[:, 2] == pixel_maps.new_tensor([0, 0, 1])).all()):
        w = row(2)
        px, py = px.div_(w), py.div_(w)
    return px, py


def input_pixels_per_output_pixel(matrices, input_size, output_size):
    """The largest local scale of each image's mapping along the output's x and y: how many input pixels
    one output pixel's step along a row, and along a column, spans.

    Measured on a coarse 9x9 grid of output positions from the mapping's finite differences, so it follows
    the changing scale of a perspective warp. Returns a (N, 2) tensor (x, y).
    """
    (in_h, in_w), (out_h, out_w) = input_size, output_size
    grid = transform_grid(matrices, 9, 9, align_corners=True)  # normalised input coords at 9x9 outputs
    to_pixels = torch.tensor([in_w / 2, in_h / 2], dtype=grid.dtype, device=grid.device)
    along_x = ((grid[:, :, 1:] - grid[:, :, :-1]) * to_pixels).norm(dim=-1) / (out_w / 8)  # 8 steps span the
    along_y = ((grid[:, 1:] - grid[:, :-1]) * to_pixels).norm(dim=-1) / (out_h / 8)        # output's width
    return torch.stack([along_x.amax(dim=(1, 2)), along_y.amax(dim=(1, 2))], dim=1)


def supersampling_taps(scale):
    """k, the taps along an axis that antialiasing takes for a local scale (input pixels per output pixel).

    A bilinear tap already averages over a tent two input pixels wide, so one tap per output pixel is
    enough up to a scale of about 3 (460 -> 224 is 2x: plain bilinear is near ideal there, and a perspective
    warp's far side may reach 2.5x); beyond, k taps spaced scale / k apart, each tent reaching about a
    pixel either side, cover the footprint: k = ceil((scale - 1) / 2).

    scale: a number, or a tensor of them (then a long tensor of the same shape).
    """
    if isinstance(scale, torch.Tensor):
        return ((scale - 1) / 2).ceil().clamp(min=1).long()
    return max(1, math.ceil((scale - 1) / 2))


def subpixel_offsets(taps_x, taps_y, device=None):
    """The (taps_x * taps_y, 2) offsets, in output pixels, of a grid of samples spread evenly over an
    output pixel: the centres of its taps_x x taps_y equal parts ((0, 0) for one tap). Made on `device`
    (computed there, not copied to it)."""
    xs = (torch.arange(taps_x, dtype=torch.float64, device=device) + 0.5) / taps_x - 0.5
    ys = (torch.arange(taps_y, dtype=torch.float64, device=device) + 0.5) / taps_y - 0.5
    return torch.stack(torch.meshgrid(xs, ys, indexing='xy'), dim=-1).reshape(-1, 2)


def supersample(input, pixel_maps, output_size, offsets, mode='bilinear', padding_mode='reflection',
                align_corners=True):
    """out[n, c, i, j] = mean over the T offsets (dx, dy) of input[n, c] read at output pixel (j + dx, i + dy)
    through the pixel maps (see _input_pixels). One offset (0, 0): a plain sample per output pixel.

    The work of warp for a group of images that take the same taps, written without branches on the
    data, so that torch.compile can make it one loop over the output (compiled_supersample). Returns
    (N, C, Ho, Wo) (float32 for uint8 input).
    """
    px, py = _input_pixels(pixel_maps, output_size, offsets)
    samples = sample_pixels(input, px, py, mode, padding_mode, align_corners)  # (N, C, T, Ho, Wo)
    return samples.mean(dim=2) if samples.shape[2] > 1 else samples[:, :, 0]


# Eager mode on the CPU samples this many output pixels at a time (about 2.5 images of 224 x 224): each
# op's temporaries (a few MB) then stay in the cache and are reused by the allocator, where whole-batch
# temporaries are fresh memory to fault in on every op. About 3x faster, the same values.
EAGER_CHUNK_PIXELS = 2 ** 17


def sampling_plan(input, matrices, output_size, mode, padding_mode, align_corners, antialias):
    """What warp decides per image before it samples anything, after checking its arguments:
        pixel_maps (N, 3, 3): output pixel index (j, i, 1) -> input pixel position (snapped_pixel_matrices),
            in the coordinates' dtype (float32, or float64 for float64 input);
        taps (N, 2) long, on the matrices' device: the sub-pixel samples along x and y (supersampling_taps
            of input_pixels_per_output_pixel with antialias and bilinear sampling, else 1 and 1).
    warp and its GPU kernel (warp_triton) both start here, so they follow one rule.
    """
    check_modes(mode, padding_mode)
    if input.dim() != 4:
        raise ValueError(f"input must be (N, C, H, W), got {tuple(input.shape)}")
    if matrices.shape != (input.shape[0], 3, 3):
        raise ValueError(f"matrices must be (N, 3, 3) with N = {input.shape[0]}, got {tuple(matrices.shape)}")
    taps = torch.ones(len(input), 2, dtype=torch.long, device=matrices.device)
    if antialias and mode == 'bilinear':
        taps = supersampling_taps(input_pixels_per_output_pixel(matrices, input.shape[2:], output_size))
    pixel_maps = snapped_pixel_matrices(matrices, input.shape[2:], output_size, align_corners,
                                        torch.promote_types(input.dtype, torch.float32))
    return pixel_maps, taps


def pinned(tensor):
    """tensor in pinned (page-locked) host memory, from which a copy to a GPU need not block; as it is when
    it already is, or where the machine cannot pin."""
    try:
        return tensor if tensor.is_pinned() else tensor.pin_memory()
    except (RuntimeError, NotImplementedError):  # no accelerator that pins host memory
        return tensor


def to_device(device, *tensors):
    """The tensors on `device`, sent in ONE copy that does not make the host wait: packed into one float64
    buffer in pinned host memory, copied with non_blocking=True, then split and cast back on the device
    (float64 holds float32 values and integers below 2^53 exactly). On a CUDA device each copy from ordinary
    memory, or a blocking one, makes the host wait until the device has finished everything queued before
    it; a batch's few small parameter tensors would each cost one. None, and tensors already on the
    device, are handed back as they are; to the CPU nothing is copied."""
    device = torch.device(device)
    moves = lambda t: t is not None and t.device != device
    moving = [t for t in tensors if moves(t)]
    if device.type == 'cpu' or not moving:
        return tensors
    buffer = pinned(torch.cat([t.detach().reshape(-1).to(torch.float64) for t in moving]))
    pieces = iter(buffer.to(device, non_blocking=True).split([t.numel() for t in moving]))
    return tuple(next(pieces).reshape(t.shape).to(t.dtype) if moves(t) else t for t in tensors)


def warp(input, matrices, size, mode='bilinear', padding_mode='reflection', align_corners=True, antialias=True,
         compiled=False, plan=None):
    """out = input read through the output->input homographies `matrices`, resampled ONCE to `size`.

    matrices (N, 3, 3) map OUTPUT normalised coordinates (x, y, 1) to INPUT normalised coordinates, with
    the perspective divide (see transform_grid). For affine matrices and antialias=False this equals
    F.affine_grid(matrices[:, :2], ...) followed by F.grid_sample.

    Antialiasing happens inside the same pass: where an image's mapping shrinks it by more than ~3x along
    the output's x or y, each output pixel averages kx x ky samples of the mapping spread over its own
    footprint (kx, ky = supersampling_taps of the scale along each axis: a perspective warp that squeezes
    one way only takes more samples that way only), the exact average of the output pixel's area in the
    limit. Nothing is resampled twice.

    Args:
        input: (N, C, H, W), floating point or uint8 (then read as is and returned as float32, 0..255).
        matrices: (N, 3, 3).
        size: int or (height, width) of the output.
        mode, padding_mode, align_corners: as grid_sample (fastai's defaults for augmentation here).
        antialias: supersample where the mapping shrinks the image by more than ~3x.
        compiled: sample through compiled_supersample (the same values, to float rounding).
        plan: (pixel_maps on input's device, taps on the host), sampling_plan's answer made beforehand
            (matrices is then not read). Without it the plan is made where the matrices are, and the maps
            sent to the input's device: matrices on the host cost one copy that does not wait, matrices on a
            GPU a read of the taps back to the host (the groups of images that take the same taps are
            chosen there).
    Returns:
        (N, C, height, width).
    """
    out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
    if plan is None:
        pixel_maps, taps = sampling_plan(input, matrices, (out_h, out_w), mode, padding_mode, align_corners,
                                         antialias)
        pixel_maps, = to_device(input.device, pixel_maps)
    else:
        pixel_maps, taps = plan
    if len(input) == 0:
        return torch.empty(0, input.shape[1], out_h, out_w, dtype=pixel_maps.dtype if input.dtype == torch.uint8
                           else input.dtype, device=input.device)
    taps = taps.cpu()  # the groups of images that take the same taps are chosen on the host
    sampler = compiled_supersample() if compiled else supersample

    def sample_images(start, stop):  # images start..stop-1, each with its taps
        return _sample_by_taps(sampler, input[start:stop], pixel_maps[start:stop], taps[start:stop], (out_h, out_w),
                               mode, padding_mode, align_corners)

    step = max(1, EAGER_CHUNK_PIXELS // (out_h * out_w))
    if compiled or input.device.type != 'cpu' or len(input) <= step:
        return sample_images(0, len(input))  # compiled loops and GPU kernels work through any batch at once
    return torch.cat([sample_images(start, start + step) for start in range(0, len(input), step)])


def _sample_by_taps(sampler, input, pixel_maps, taps, output_size, mode, padding_mode, align_corners):
    """warp's sampling of images whose taps (N, 2) may differ: the whole batch takes the taps most of its
    images need (no copy of the batch); the few images that need others are sampled again with theirs, and
    replace their rows."""
    def sample(taps_x, taps_y, chosen=None):  # the images `chosen` (None: all of them)
        images, maps = (input, pixel_maps) if chosen is None else (input[chosen], pixel_maps[chosen])
        offsets = subpixel_offsets(taps_x, taps_y, device=input.device)
        return sampler(images, maps, output_size, offsets, mode, padding_mode, align_corners)

    groups, group_of_image, counts = taps.unique(dim=0, return_inverse=True, return_counts=True)  # on the host
    most = int(counts.argmax())
    output = sample(*groups[most].tolist())
    for i, (taps_x, taps_y) in enumerate(groups.tolist()):
        if i != most:
            chosen, = to_device(input.device, (group_of_image == i).nonzero().squeeze(1))
            output.index_copy_(0, chosen, sample(taps_x, taps_y, chosen))
    return output


# --- torch.compile: everything specific to compiling warp (with sampling.eager_shortcuts) ----------------

def mark_batch_dynamic(*tensors):
    """Tell torch.compile that dim 0 of these tensors, the number of images, changes from call to call, so
    that it compiles one graph for every number of images (but 1, which torch always treats apart),
    instead of a graph per number until its recompile limit (8) stops compiling and runs the rest eagerly."""
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor):
            torch._dynamo.maybe_mark_dynamic(tensor, 0)


@functools.cache
def compiled_supersample():
    """supersample through torch.compile: the coordinates, the padding, the four gathers and the blend of
    every output value in one loop (C++ on the CPU, Triton on a GPU).

    The tap groups' numbers of images change from batch to batch, and so do their numbers of sub-pixel
    samples: both sizes are dynamic (mark_batch_dynamic), and a group of one image is sampled as two copies
    of it, so that an input and output size compile two graphs (one sample per pixel, several), three if
    torch first saw as many images as samples and assumed the two sizes equal. About 25 s the first time,
    a few seconds once torch's compile cache holds them.
    """
    compiled = torch.compile(supersample)

    def sample(input, pixel_maps, output_size, offsets, *args):
        single = len(input) == 1
        if single:
            input, pixel_maps = input.repeat(2, 1, 1, 1), pixel_maps.repeat(2, 1, 1)
        mark_batch_dynamic(input, pixel_maps)
        offsets = offsets.clone()  # a tensor of its own: compiled code would guard a view's base's shape too
        torch._dynamo.maybe_mark_dynamic(offsets, 0)
        out = compiled(input, pixel_maps, output_size, offsets, *args)
        return out[:1] if single else out

    return sample
