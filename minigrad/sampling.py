"""Sampling: read an image at any positions, with ONE interpolation.

Read top to bottom: normalised coordinates -> padding (what to read outside the image) -> grid_sample
(nearest and bilinear, from gathers), torch.nn.functional.grid_sample's twin. homographies.py says WHERE
to read (the matrices of augmentation); warp.py reads a whole batch through them.

Coordinates are normalised as torch's: x is the column, y the row, both in [-1, 1] across the image.
With align_corners=True, -1 and 1 are the centres of the corner pixels; with False, their outer edges.
"""
import math

import torch


def unnormalize(coordinate, size, align_corners):
    """The pixel position of a normalised coordinate along an axis of `size` pixels.

        align_corners=True:   p = (c + 1) / 2 * (size - 1)        (-1 -> 0, 1 -> size - 1)
        align_corners=False:  p = ((c + 1) * size - 1) / 2         (-1 -> -0.5, 1 -> size - 0.5)
    Derivative: dp/dc = (size - 1) / 2, or size / 2.
    """
    if align_corners:
        return (coordinate + 1) / 2 * (size - 1)
    return ((coordinate + 1) * size - 1) / 2


def reflect(p, low, high):
    """p folded back into [low, high] by mirroring at both ends, as many times as it takes.

    Mirroring makes a triangle wave of period 2 span (span = high - low): with a = |p - low| mod 2 span,
        reflect(p) = high - |span - a|        (a in [0, span]: low + a; a in [span, 2 span]: high - (a - span))
    Derivative: +-1, sign(p - low) sign(span - a) (the sign flips with each mirror).
    """
    span = high - low
    if span <= 0:
        return p * 0  # a one-pixel axis: always 0, with gradient 0 (as torch), p kept in the graph
    a = torch.fmod((p - low).abs(), 2 * span)
    return high - (span - a).abs()


def eager_shortcuts(x):
    """Whether the code may branch on the values of x to skip work (say, padding when every position is
    inside): only on the CPU, where reading a value is free. On a GPU the read would make the host wait for
    the device, which costs more than the work it skips; under torch.compile the compiled loop fuses that
    work in, cheaper than the test. warp.py's compiled_supersample is the other half of what is specific to
    compiling."""
    return x.device.type == 'cpu' and not torch.compiler.is_compiling()


def pad_coordinates(p, size, padding_mode, align_corners):
    """Where a pixel position outside [0, size - 1] reads from: 'border' clamps it to the edge,
    'reflection' mirrors it (about the edge pixels' centres with align_corners, their outer edges
    without) and then clamps; 'zeros' leaves it, and grid_sample masks the taps that fall outside."""
    if padding_mode == 'zeros':
        return p
    if eager_shortcuts(p):
        low, high = torch.aminmax(p.detach()) if p.numel() else (0, 0)
        if low >= 0 and high <= size - 1:
            return p  # all inside: padding changes nothing (the common case of a crop inside the image)
    if padding_mode == 'border':
        return p.clamp(0, size - 1)
    low, high = (0, size - 1) if align_corners else (-0.5, size - 0.5)
    # A position with nothing to mirror keeps its exact value (the fold's arithmetic would round it), so an
    # image reads the same pixels whatever the other images in its batch do.
    p = torch.where((p >= low) & (p <= high), p, reflect(p, low, high))
    return p.clamp(0, size - 1)


def _gather_pixels(input, index, shift=0):
    """input (N, C, H, W) read at flat pixel indices `index` + shift (index: (N, ...) int64, a pixel
    (y, x) is y W + x): (N, C, ...). One gather reads all channels at once from the planes (N, C, H*W);
    the shift is a view starting `shift` pixels later, so a neighbour's tap needs no second index."""
    n, c, height, width = input.shape
    planes = input.reshape(n, c, height * width)[:, :, shift:]
    flat = index.reshape(n, 1, math.prod(index.shape[1:]))
    return planes.gather(2, flat.expand(n, c, flat.shape[-1])).reshape(n, c, *index.shape[1:])


def _pixel_index(xs, ys, height, width):
    """The flat index y W + x of integer-valued pixel positions (float tensors), the one int64 tensor a
    tap needs: computed in floating point, exact below 2**24 in float32 (and in float64 for larger images)."""
    if height * width > 2 ** 24 and xs.dtype != torch.float64:
        xs, ys = xs.double(), ys.double()
    return (ys * width + xs).long()


def _gather_taps_or_zero(input, xs, ys):
    """input read at integer-valued pixels (xs, ys), each (N, ...): (N, C, ...), 0 where a tap falls
    outside ('zeros' padding: each tap needs its own test, hence its own index)."""
    height, width = input.shape[2:]
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    index = _pixel_index(xs.clamp(0, width - 1), ys.clamp(0, height - 1), height, width)
    return _gather_pixels(input, index) * inside.unsqueeze(1)


def check_modes(mode, padding_mode):
    """A ValueError naming the argument unless mode and padding_mode are ones grid_sample knows."""
    if mode not in ('bilinear', 'nearest'):
        raise ValueError(f"mode={mode!r} is not 'bilinear' or 'nearest'")
    if padding_mode not in ('zeros', 'border', 'reflection'):
        raise ValueError(f"padding_mode={padding_mode!r} is not 'zeros', 'border' or 'reflection'")


def grid_sample(input, grid, mode='bilinear', padding_mode='zeros', align_corners=False):
    """output[n, c, i, j] = input[n, c] read at grid[n, i, j] = (x, y), normalised.

    The same results as torch.nn.functional.grid_sample on 4-D input, written with gathers. With pixel
    position (px, py) = unnormalize(x, y), x0 = floor(px), fx = px - x0 (and likewise for y):
        nearest:   input[round(py), round(px)]       (round half to even, as torch)
        bilinear:  (1-fy)(1-fx) I[y0, x0] + (1-fy) fx I[y0, x0+1] + fy (1-fx) I[y0+1, x0] + fy fx I[y0+1, x0+1]
    Taps outside the image read 0 ('zeros'), or come from the padded position ('border', 'reflection').
    Gradients come from autograd through these ops: to the input, each tap's weight scattered back to its
    pixel (d out / d I[y0, x0] = (1-fy)(1-fx), ...); to the grid, d out / d px = (1-fy)(I[y0, x0+1] - I[y0, x0])
    + fy (I[y0+1, x0+1] - I[y0+1, x0]), times d px / d x from unnormalize and the padding.

    Args:
        input: (N, C, H, W).
        grid: (N, Ho, Wo, 2) normalised (x, y) sampling positions.
        mode: 'bilinear' | 'nearest'.
        padding_mode: 'zeros' | 'border' | 'reflection'.
        align_corners: see the module docstring.
    Returns:
        (N, C, Ho, Wo), input's dtype.
    """
    check_modes(mode, padding_mode)
    if input.dim() != 4 or grid.dim() != 4 or grid.shape[-1] != 2 or grid.shape[0] != input.shape[0]:
        raise ValueError(f"grid_sample needs input (N, C, H, W) and grid (N, Ho, Wo, 2) with the same N; got "
                         f"{tuple(input.shape)} and {tuple(grid.shape)}")
    height, width = input.shape[2:]
    # Coordinates in float32 at least: in float16 a position near pixel 400 would be off by a quarter pixel.
    grid = grid.to(torch.promote_types(grid.dtype, torch.float32))
    px = unnormalize(grid[..., 0], width, align_corners)
    py = unnormalize(grid[..., 1], height, align_corners)
    return sample_pixels(input, px, py, mode, padding_mode, align_corners)


def sample_pixels(input, px, py, mode='bilinear', padding_mode='zeros', align_corners=False):
    """grid_sample's work after unnormalize: input (N, C, H, W) read at pixel positions px, py (N, ...):
    (N, C, ...), in input's dtype, float32 for uint8 input."""
    height, width = input.shape[2:]
    px = pad_coordinates(px, width, padding_mode, align_corners)
    py = pad_coordinates(py, height, padding_mode, align_corners)
    # A uint8 image is read as it is (a quarter of the bytes of floats) and weighted in float32.
    weight_dtype = input.dtype if input.is_floating_point() else torch.float32
    if padding_mode == 'zeros':
        # Positions over a pixel outside all read 0 (gradient 0): clamped, so that their indices stay small.
        px, py = px.clamp(-2, width + 1), py.clamp(-2, height + 1)
        if mode == 'nearest':
            return _gather_taps_or_zero(input, torch.round(px), torch.round(py)).to(weight_dtype)
        x0, y0 = torch.floor(px), torch.floor(py)
        fx, fy = (px - x0).unsqueeze(1).to(weight_dtype), (py - y0).unsqueeze(1).to(weight_dtype)
        out = _gather_taps_or_zero(input, x0, y0) * ((1 - fx) * (1 - fy))
        out.addcmul_(_gather_taps_or_zero(input, x0 + 1, y0), fx * (1 - fy))
        out.addcmul_(_gather_taps_or_zero(input, x0, y0 + 1), (1 - fx) * fy)
        return out.addcmul_(_gather_taps_or_zero(input, x0 + 1, y0 + 1), fx * fy)
    # 'border' and 'reflection': every position is inside [0, size - 1] now.
    if mode == 'nearest':
        return _gather_pixels(input, _pixel_index(torch.round(px), torch.round(py), height, width)).to(weight_dtype)
    # x0 = floor(px), but at most size - 2, so that x0 + 1 is always a pixel: at px = size - 1 the weight
    # fx = 1 then falls on it, the value x0 = size - 1 with fx = 0 would give. The four taps are then the
    # pixels index, index + 1, index + W and index + W + 1: one index, read from four shifted views.
    x0, y0 = torch.floor(px).clamp(max=max(width - 2, 0)), torch.floor(py).clamp(max=max(height - 2, 0))
    fx, fy = (px - x0).unsqueeze(1).to(weight_dtype), (py - y0).unsqueeze(1).to(weight_dtype)
    index = _pixel_index(x0, y0, height, width)
    right, below = (1 if width > 1 else 0), (width if height > 1 else 0)  # a one-pixel axis has no neighbour
    # The four weights are products of one-channel maps; each tap is then one multiply-add over all
    # channels into the same output buffer.
    out = _gather_pixels(input, index) * ((1 - fx) * (1 - fy))
    out.addcmul_(_gather_pixels(input, index, right), fx * (1 - fy))
    out.addcmul_(_gather_pixels(input, index, below), (1 - fx) * fy)
    return out.addcmul_(_gather_pixels(input, index, right + below), fx * fy)
