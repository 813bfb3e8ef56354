"""Homographies: the 3x3 matrices that say where each output pixel reads its input.

A homography maps output coordinates (x, y, 1) to input coordinates (u, v, w), read at (u / w, v / w): the
perspective divide; an affine map has bottom row (0, 0, 1), so w = 1. Here: the sampling grid of a batch of
matrices, the same maps in pixel units (what warp.py computes with), and the builders that augmentation
multiplies into one matrix per image: flip, rotation, zoom, random-resized crop, perspective from four corners.
Coordinates are normalised as in sampling.py.
"""
import math

import torch


def output_coordinates(size, align_corners, device=None, dtype=torch.float32):
    """The normalised coordinates of the centres of `size` output pixels along one axis (a single pixel
    sits in the middle, 0, as in torch's affine_grid)."""
    if size == 1:
        return torch.zeros(1, device=device, dtype=dtype)
    if align_corners:
        return torch.linspace(-1, 1, size, device=device, dtype=dtype)
    return (torch.arange(size, device=device, dtype=dtype) * 2 + 1) / size - 1


def transform_grid(matrices, height, width, align_corners, offset=(0.0, 0.0)):
    """The sampling grid (N, H, W, 2) of output->input homographies `matrices` (N, 3, 3).

    Each output pixel's homogeneous (x, y, 1) is mapped to (u, v, w) = M (x, y, 1), and reads the input at
    (u / w, v / w): the perspective divide (w = 1 for an affine M). `offset` shifts the output positions by
    a fraction of an output pixel, for supersampling.
    """
    dtype = torch.promote_types(matrices.dtype, torch.float32)
    xs = output_coordinates(width, align_corners, matrices.device, dtype)
    ys = output_coordinates(height, align_corners, matrices.device, dtype)
    step_x = (xs[1] - xs[0]) if width > 1 else torch.tensor(2.0 / width, dtype=dtype)
    step_y = (ys[1] - ys[0]) if height > 1 else torch.tensor(2.0 / height, dtype=dtype)
    xs, ys = xs + offset[0] * step_x, ys + offset[1] * step_y
    points = torch.stack([xs.expand(height, width), ys[:, None].expand(height, width),
                          torch.ones(height, width, dtype=dtype, device=matrices.device)], dim=-1)
    mapped = points.reshape(1, -1, 3) @ matrices.to(dtype).transpose(1, 2)  # (N, H*W, 3)
    return (mapped[..., :2] / mapped[..., 2:]).reshape(-1, height, width, 2)


def pixel_matrices(matrices, input_size, output_size, align_corners):
    """matrices (output->input, normalised) turned into maps from output PIXEL indices (j, i, 1) to input
    pixel positions: U M N, with N normalising the output's indices and U unnormalising the input's.
    Composed as 3x3 matrices in float64, so the big per-pixel work is one matrix product and a divide."""
    def normalise(size):  # pixel index -> normalised coordinate: c = a j + b
        if size == 1:
            return 0.0, 0.0
        return (2 / (size - 1), -1.0) if align_corners else (2 / size, 1 / size - 1)

    def unnormalise(size):  # normalised coordinate -> pixel position: p = a c + b
        return ((size - 1) / 2 if align_corners else size / 2), (size - 1) / 2

    (in_h, in_w), (out_h, out_w) = input_size, output_size
    (ax, bx), (ay, by) = normalise(out_w), normalise(out_h)
    (ux, vx), (uy, vy) = unnormalise(in_w), unnormalise(in_h)
    n = torch.tensor([[ax, 0, bx], [0, ay, by], [0, 0, 1]], dtype=torch.float64)
    u = torch.tensor([[ux, 0, vx], [0, uy, vy], [0, 0, 1]], dtype=torch.float64)
    return u.to(matrices.device) @ matrices.double() @ n.to(matrices.device)


def snapped_pixel_matrices(matrices, input_size, output_size, align_corners, dtype):
    """pixel_matrices with entries within 1e-9 of an integer made that integer: a map that sends pixels
    onto pixels (the identity, flips, quarter turns) then gives exact integer positions and copies pixels
    exactly, instead of mixing in 1e-7 of a neighbour through the rounding of cos(90 degrees)."""
    pixel_maps = pixel_matrices(matrices, input_size, output_size, align_corners)
    nearest = pixel_maps.round()
    return torch.where((pixel_maps - nearest).abs() < 1e-9, nearest, pixel_maps).to(dtype)


# --- the builders: each (N, 3, 3), output -> input normalised coordinates ----------------------------

def _identity(n, dtype=torch.float32, device=None):
    return torch.eye(3, dtype=dtype, device=device).repeat(n, 1, 1)


def flip_matrices(flips):
    """Horizontal flip where flips[n] is True: x -> -x."""
    m = _identity(len(flips), device=flips.device)
    m[:, 0, 0] = 1 - 2 * flips.float()
    return m


def rotation_matrices(degrees, aspect=1.0):
    """Rotation of the image by `degrees` about its centre: clockwise on screen (y points down), fastai's sign.

    In pixel units the output->input map is the rotation [[c, -s], [s, c]] with c = cos(t), s = sin(t),
    t = -degrees (the image turns one way, so the sampling positions turn the other). In normalised
    coordinates of an image of aspect = width / height it becomes [[c, -s / aspect], [s * aspect, c]], so
    that a non-square image rotates without shearing.
    """
    t = torch.deg2rad(-degrees.double())
    c, s = torch.cos(t), torch.sin(t)
    m = _identity(len(degrees), dtype=torch.float64, device=degrees.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s / aspect, s * aspect, c
    return m


def zoom_matrices(scales, centres):
    """Zoom in by `scales` (>= 1) about a point chosen by `centres` (N, 2) in [0, 1] (0.5: the middle).

    Output -> input: p -> p / z + (1 - 1 / z) (2 c - 1): the window of width 2 / z slides from the left
    edge (c = 0) to the right edge (c = 1), always inside the image.
    """
    inverse = 1 / scales.float()
    m = _identity(len(scales), device=scales.device)
    m[:, 0, 0] = m[:, 1, 1] = inverse
    m[:, :2, 2] = (1 - inverse)[:, None] * (2 * centres.float() - 1)
    return m


def crop_matrices(widths, heights, centres):
    """The output frame mapped onto the box of `widths` x `heights` (fractions of the input's width and
    height) centred at `centres` (N, 2) in normalised coordinates: p -> (w x + cx, h y + cy)."""
    m = _identity(len(widths), device=widths.device)
    m[:, 0, 0], m[:, 1, 1] = widths.float(), heights.float()
    m[:, :2, 2] = centres.float()
    return m


def random_resized_crop_boxes(n, min_scale=0.08, ratio=(3 / 4, 4 / 3), generator=None, aspect=1.0):
    """Random crops as torchvision's RandomResizedCrop draws them, one per image: (widths, heights, centres),
    the boxes' sizes as fractions of the image's width and height and their centres (N, 2) in normalised
    coordinates, ready for crop_matrices.

    Area fraction s ~ U(min_scale, 1) and the box's aspect ratio r (width / height in pixels) log-uniform in
    `ratio`. For an image of aspect a = W / H the box is then sqrt(s r / a) of the width by sqrt(s a / r) of
    the height (so that w W / (h H) = r); a box that does not fit is drawn again (10 tries, as torchvision),
    then falls back to the largest centred box whose ratio is in `ratio` (the whole image if its own aspect
    is). Its centre is uniform over the positions that keep
    the whole box inside the image: with no rotation or warp, nothing is sampled from outside. ratio=(1, 1)
    (fastai's aug_transforms) crops squares from which a square output is resized without stretching.
    """
    fallback = min(max(aspect, ratio[0]), ratio[1]) / aspect  # the fallback box's width / height, unit coordinates
    widths, heights = torch.full((n,), min(fallback, 1.0)), torch.full((n,), min(1 / fallback, 1.0))
    todo = torch.ones(n, dtype=torch.bool)
    for _ in range(10):
        area = torch.empty(n).uniform_(min_scale, 1, generator=generator)
        log_ratio = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
        box_ratio = log_ratio.exp() / aspect  # the box's width / height in the image's unit coordinates
        w, h = (area * box_ratio).sqrt(), (area / box_ratio).sqrt()
        fits = todo & (w <= 1) & (h <= 1)
        widths[fits], heights[fits] = w[fits], h[fits]
        todo &= ~fits
    free = torch.stack([1 - widths, 1 - heights], dim=1)
    centres = (torch.rand(n, 2, generator=generator) * 2 - 1) * free
    return widths, heights, centres


def random_resized_crop_matrices(n, min_scale=0.08, ratio=(3 / 4, 4 / 3), generator=None, device=None, aspect=1.0):
    """The crop matrices of random_resized_crop_boxes's boxes."""
    return crop_matrices(*random_resized_crop_boxes(n, min_scale, ratio, generator, aspect)).to(device)


def homography_from_corners(sources, targets):
    """The 3x3 homographies H with H (s, 1) ~ (t, 1) for four point pairs (N, 4, 2) each.

    Writing H = [[a, b, c], [d, e, f], [g, h, 1]], each pair gives two linear equations in the 8 unknowns:
        a x + b y + c - g x u - h y u = u,    d x + e y + f - g x v - h y v = v   for (x, y) -> (u, v),
    solved as one batched 8x8 system.
    """
    x, y = sources[..., 0], sources[..., 1]
    u, v = targets[..., 0], targets[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -x * u, -y * u], dim=-1)
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -x * v, -y * v], dim=-1)
    system = torch.cat([rows_u, rows_v], dim=1).double()
    values = torch.cat([u, v], dim=1).double()
    h = torch.linalg.solve(system, values)
    return torch.cat([h, torch.ones_like(h[:, :1])], dim=1).reshape(-1, 3, 3).to(sources.dtype)


CORNERS = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


def perspective_matrices(x_magnitudes, y_magnitudes):
    """fastai's Warp: a tilt of the image plane, left-right by mx and up-down by my.

    With mx, my per image (fastai draws them uniform in [-max_warp, max_warp]), the output->input map sends
    the moved points (-1-my, -1-mx), (1+my, -1+mx), (1-my, 1-mx), (-1+my, 1+mx) to the corners (-1,-1),
    (1,-1), (1,1), (-1,1), in that order: the output pixel at a moved point reads the input's corner there,
    as fastai's _WarpCoord, whose coefficients map its target points onto the original ones.
    """
    mx, my = x_magnitudes.float(), y_magnitudes.float()
    moved = torch.stack([torch.stack([-1 - my, -1 - mx], 1), torch.stack([1 + my, -1 + mx], 1),
                         torch.stack([1 - my, 1 - mx], 1), torch.stack([-1 + my, 1 + mx], 1)], dim=1)
    corners = CORNERS.to(mx.device).expand(len(mx), 4, 2)
    return homography_from_corners(moved, corners)
