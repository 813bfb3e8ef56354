"""Sampling and homographies: move an image through any projective map with ONE interpolation.

Read top to bottom: normalised coordinates -> padding (what to read outside the image) -> grid_sample
(nearest and bilinear, from gathers) -> warp (a 3x3 matrix per image, perspective divide, antialiasing) ->
the matrix builders (flip, rotation, zoom, random-resized crop, perspective) that augmentations compose.

Coordinates are normalised as torch's: x is the column, y the row, both in [-1, 1] across the image.
With align_corners=True, -1 and 1 are the centres of the corner pixels; with False, their outer edges.
"""
import functools
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


def pad_coordinates(p, size, padding_mode, align_corners):
    """Where a pixel position outside [0, size - 1] reads from: 'border' clamps it to the edge,
    'reflection' mirrors it (about the edge pixels' centres with align_corners, their outer edges
    without) and then clamps; 'zeros' leaves it, and grid_sample masks the taps that fall outside."""
    if padding_mode == 'zeros':
        return p
    if not torch.compiler.is_compiling():  # compiled code fuses the padding in, cheaper than this test
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


def _pixel_matrices(matrices, input_size, output_size, align_corners):
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


def _snapped_pixel_matrices(matrices, input_size, output_size, align_corners, dtype):
    """_pixel_matrices with entries within 1e-9 of an integer made that integer: a map that sends pixels
    onto pixels (the identity, flips, quarter turns) then gives exact integer positions and copies pixels
    exactly, instead of mixing in 1e-7 of a neighbour through the rounding of cos(90 degrees)."""
    pixel_maps = _pixel_matrices(matrices, input_size, output_size, align_corners)
    nearest = pixel_maps.round()
    return torch.where((pixel_maps - nearest).abs() < 1e-9, nearest, pixel_maps).to(dtype)


def _input_pixels(pixel_maps, output_size, offsets):
    """Input pixel positions (px, py), each (N, T, Ho, Wo), that the output pixels (j, i), shifted by each
    of the T `offsets` (T, 2) (fractions of an output pixel), read through the pixel maps
    P = [[a, b, c], [d, e, f], [g, h, k]] (see _snapped_pixel_matrices):
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
    # The perspective divide. Only where every bottom row is (0, 0, 1) is w = 1 everywhere: eager mode then
    # skips it (a homography times a constant, 2.5 M, is the same map, with w = 2.5: it must divide).
    # Compiled code always divides: the divide fuses into the sampling loop.
    affine = (pixel_maps[:, 2] == pixel_maps.new_tensor([0, 0, 1])).all()
    if torch.compiler.is_compiling() or not bool(affine):
        w = row(2)
        px, py = px.div_(w), py.div_(w)
    return px, py


def input_pixels_per_output_pixel(matrices, input_size, output_size, align_corners=True):
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


def subpixel_offsets(taps_x, taps_y):
    """The (taps_x * taps_y, 2) offsets, in output pixels, of a grid of samples spread evenly over an
    output pixel: the centres of its taps_x x taps_y equal parts ((0, 0) for one tap)."""
    xs = (torch.arange(taps_x, dtype=torch.float64) + 0.5) / taps_x - 0.5
    ys = (torch.arange(taps_y, dtype=torch.float64) + 0.5) / taps_y - 0.5
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


# Eager mode on the CPU samples this many output pixels at a time (about 2.5 images of 224 x 224): each
# op's temporaries (a few MB) then stay in the cache and are reused by the allocator, where whole-batch
# temporaries are fresh memory to fault in on every op. About 3x faster, the same values.
EAGER_CHUNK_PIXELS = 2 ** 17


def sampling_plan(input, matrices, output_size, mode, padding_mode, align_corners, antialias):
    """What warp decides per image before it samples anything, after checking its arguments:
        pixel_maps (N, 3, 3): output pixel index (j, i, 1) -> input pixel position (_snapped_pixel_matrices),
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
    pixel_maps = _snapped_pixel_matrices(matrices, input.shape[2:], output_size, align_corners,
                                         torch.promote_types(input.dtype, torch.float32))
    return pixel_maps, taps


def warp(input, matrices, size, mode='bilinear', padding_mode='reflection', align_corners=True, antialias=True,
         compiled=False):
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
    Returns:
        (N, C, height, width).
    """
    out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
    pixel_maps, taps = sampling_plan(input, matrices, (out_h, out_w), mode, padding_mode, align_corners, antialias)
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
        return sampler(images, maps, output_size, subpixel_offsets(taps_x, taps_y), mode, padding_mode, align_corners)

    groups, group_of_image, counts = taps.unique(dim=0, return_inverse=True, return_counts=True)
    most = int(counts.argmax())
    output = sample(*groups[most].tolist())
    for i, (taps_x, taps_y) in enumerate(groups.tolist()):
        if i != most:
            chosen = (group_of_image == i).nonzero().squeeze(1).to(input.device)
            output.index_copy_(0, chosen, sample(taps_x, taps_y, chosen))
    return output


# --- matrix builders: each (N, 3, 3), output -> input normalised coordinates -------------------------

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


def random_resized_crop_matrices(n, min_scale=0.08, ratio=(3 / 4, 4 / 3), generator=None, device=None):
    """Random crops as torchvision's RandomResizedCrop draws them, one per image.

    Area fraction s ~ U(min_scale, 1) and aspect ratio r log-uniform in `ratio`, so the box is sqrt(s r)
    of the width by sqrt(s / r) of the height; a box that does not fit is drawn again (10 tries, as
    torchvision), then falls back to the largest centred box of ratio 1. Its centre is uniform over the
    positions that keep the whole box inside the image: with no rotation or warp, nothing is sampled from
    outside.
    """
    widths, heights = torch.ones(n), torch.ones(n)
    todo = torch.ones(n, dtype=torch.bool)
    for _ in range(10):
        area = torch.empty(n).uniform_(min_scale, 1, generator=generator)
        log_ratio = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
        w, h = (area * log_ratio.exp()).sqrt(), (area / log_ratio.exp()).sqrt()
        fits = todo & (w <= 1) & (h <= 1)
        widths[fits], heights[fits] = w[fits], h[fits]
        todo &= ~fits
    free = torch.stack([1 - widths, 1 - heights], dim=1)
    centres = (torch.rand(n, 2, generator=generator) * 2 - 1) * free
    return crop_matrices(widths, heights, centres).to(device)


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
    """fastai's Warp: the output's corners read from input corners moved by the magnitudes.

    With mx, my per image (fastai draws them uniform in [-max_warp, max_warp]), the corners
    (-1,-1), (1,-1), (1,1), (-1,1) map to (-1-my, -1-mx), (1+my, -1+mx), (1-my, 1-mx), (-1+my, 1+mx):
    a tilt of the image plane, left-right by mx and up-down by my.
    """
    mx, my = x_magnitudes.float(), y_magnitudes.float()
    targets = torch.stack([torch.stack([-1 - my, -1 - mx], 1), torch.stack([1 + my, -1 + mx], 1),
                           torch.stack([1 - my, 1 - mx], 1), torch.stack([-1 + my, 1 + mx], 1)], dim=1)
    sources = CORNERS.to(mx.device).expand(len(mx), 4, 2)
    return homography_from_corners(sources, targets)
