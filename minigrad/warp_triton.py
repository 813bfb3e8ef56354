"""warp.py's warp as a hand-written GPU kernel, in Triton: the same map, the same rule, one launch per batch.

Read warp.py first; this file computes what its `warp` computes, the way a GPU wants it. The work splits in two:

  host (a few small tensor ops per batch, no sync with the GPU): warp.sampling_plan gives each image its
      3x3 pixel map P (output pixel (j, i, 1) -> input pixel position) and its tap counts kx, ky (the
      sub-pixel samples antialiasing takes), exactly as for the tensor-op path; then ONE kernel launch.
  kernel (`_warp_kernel`): a grid of programs, each owning BLOCK consecutive output pixels
      of ONE image, all of its channels. A program maps its pixels through that image's P, divides by w,
      applies the padding rule and reads the bilinear taps; an image with kx x ky taps loops kx x ky times
      over that, inside the kernel. No image waits for another, no batch is regrouped on the host.

`render` is the augmentation's whole per-batch job in one pass: uint8 presized batch -> warp -> per-image
lighting (pets.augment's brightness and contrast in logit space) -> [0, 1] -> optional mean/std
normalisation -> float32 (or float16 / bfloat16), each output value written once.

Without a GPU the same kernels run on CPU tensors under Triton's interpreter: set TRITON_INTERPRET=1 in the
environment before this module is imported (the decorator reads it), and every tl.* call runs as NumPy on
the whole block. That is how the tests prove these kernels equal warp.py on machines with no GPU.
"""
import torch
import triton
import triton.language as tl

from minigrad import warp as W


@triton.jit
def _padded(p, size, PADDING: tl.constexpr, ALIGN_CORNERS: tl.constexpr):
    """sampling.pad_coordinates for one axis of a block of positions p on an axis of `size` pixels.

    'zeros' keeps p (each tap is masked later), clamped to [-2, size + 1] so the integer index stays small.
    'border' clamps to [0, size - 1]. 'reflection' folds p back with the triangle wave of sampling.reflect,
    high - |span - (|p - low| mod 2 span)|, about the edge pixels' centres (align_corners) or their outer
    edges, where p lies outside [low, high], then clamps.
    """
    if PADDING == 'zeros':
        return tl.minimum(tl.maximum(p, -2.0), size + 1.0)
    if PADDING == 'reflection':
        if ALIGN_CORNERS:
            low = 0.0
            high = size - 1.0
        else:
            low = -0.5
            high = size - 0.5
        span = high - low
        # A one-pixel axis (span 0) always reads pixel 0; the modulus is kept non-zero for it, then unused.
        folded = tl.abs(p - low) % tl.maximum(2.0 * span, 1.0)
        mirrored = tl.where(span > 0, high - tl.abs(span - folded), 0.0)
        p = tl.where((p >= low) & (p <= high), p, mirrored)  # nothing to mirror: p exactly, as sampling.py
    return tl.minimum(tl.maximum(p, 0.0), size - 1.0)


@triton.jit
def _round_half_to_even(p):
    """torch.round: the nearest integer, ties to the even one (2.5 -> 2, 3.5 -> 4). p - floor(p) is exact,
    so the tie test is too (floor(p + 0.5) would round 0.49999997 up)."""
    r = tl.floor(p)
    fraction = p - r
    odd = (r - 2.0 * tl.floor(r * 0.5)) == 1.0
    return tl.where((fraction > 0.5) | ((fraction == 0.5) & odd), r + 1.0, r)


@triton.jit
def _tap(image_ptr, channel_offsets, channel_ok, x, y, weight, height, width, stride_h, stride_w,
         PADDING: tl.constexpr):
    """weight * input[:, y, x] for a block of integer-valued positions (x, y): a (BLOCK_C, BLOCK) tile in
    the weights' dtype.

    Each program lane reads its own pixel, so the loads are gathers, masked where a lane must read nothing:
    a channel past C (BLOCK_C is C rounded up to a power of two) or, with 'zeros' padding, a tap outside the
    image, which then reads 0. Other paddings have already put every position inside.
    """
    mask = channel_ok[:, None]
    if PADDING == 'zeros':
        inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
        mask = mask & inside[None, :]
    pixel_offsets = y.to(tl.int32) * stride_h + x.to(tl.int32) * stride_w
    values = tl.load(image_ptr + channel_offsets[:, None] + pixel_offsets[None, :], mask=mask, other=0)
    return values.to(weight.dtype) * weight[None, :]


@triton.jit
def _sample_tile(input_ptr, maps_ptr, taps_ptr, image, pixels, out_width,
                 channels, height, width, stride_n, stride_c, stride_h, stride_w,
                 MODE: tl.constexpr, PADDING: tl.constexpr, ALIGN_CORNERS: tl.constexpr, BLOCK_C: tl.constexpr,
                 COMPUTE: tl.constexpr):
    """The warped values of output pixels `pixels` (flat indices i * out_width + j) of image `image`,
    all channels: a (BLOCK_C, BLOCK) tile, the mean over the image's kx x ky sub-pixel samples, computed in
    COMPUTE (float32, float64 for float64 input: warp.py's precision, so nearest rounds ties alike).

    For a sample at offset (dx, dy) of output pixel (j, i), with P = [[a, b, c], [d, e, f], [g, h, k]]:
        w = (g (j + dx) + k) + h (i + dy),  px = ((a (j + dx) + c) + b (i + dy)) / w,  py likewise with d, e, f
    (the same order of operations as warp._input_pixels, so the same rounding), then the padding
    rule, then nearest or bilinear taps:
        bilinear: (1-fy)(1-fx) I[y0, x0] + (1-fy) fx I[y0, x0+1] + fy (1-fx) I[y0+1, x0] + fy fx I[y0+1, x0+1]
    """
    # The image's own 9 map entries and tap counts: scalars every lane shares.
    m = maps_ptr + image * 9
    a, b, c = tl.load(m + 0), tl.load(m + 1), tl.load(m + 2)
    d, e, f = tl.load(m + 3), tl.load(m + 4), tl.load(m + 5)
    g, h, k = tl.load(m + 6), tl.load(m + 7), tl.load(m + 8)
    taps_x = tl.load(taps_ptr + image * 2)
    taps_y = tl.load(taps_ptr + image * 2 + 1)

    j = (pixels % out_width).to(COMPUTE)
    i = (pixels // out_width).to(COMPUTE)
    channel = tl.arange(0, BLOCK_C)
    channel_ok = channel < channels
    channel_offsets = channel * stride_c
    # The image's first element: an int64 offset, since a large batch passes 2**31 elements.
    image_ptr = input_ptr + image.to(tl.int64) * stride_n

    total = tl.zeros((BLOCK_C, pixels.shape[0]), dtype=COMPUTE)
    # A tap count is a loop bound read from memory: an image with 3 x 2 taps runs this body 6 times.
    for ty in range(taps_y):
        y = i + ((ty + 0.5) / taps_y - 0.5)  # the centre of the ty-th of taps_y equal parts of the pixel
        for tx in range(taps_x):
            x = j + ((tx + 0.5) / taps_x - 0.5)
            w = (g * x + k) + h * y
            px = _padded(((a * x + c) + b * y) / w, width, PADDING, ALIGN_CORNERS)
            py = _padded(((d * x + f) + e * y) / w, height, PADDING, ALIGN_CORNERS)
            if MODE == 'nearest':
                total += _tap(image_ptr, channel_offsets, channel_ok, _round_half_to_even(px),
                              _round_half_to_even(py), tl.full(px.shape, 1.0, COMPUTE), height, width,
                              stride_h, stride_w, PADDING)
            else:
                x0 = tl.floor(px)
                y0 = tl.floor(py)
                fx = px - x0
                fy = py - y0
                x1 = x0 + 1.0
                y1 = y0 + 1.0
                if PADDING != 'zeros':  # at px = size - 1 the second tap has weight 0, but must be a pixel
                    x1 = tl.minimum(x1, width - 1.0)
                    y1 = tl.minimum(y1, height - 1.0)
                total += _tap(image_ptr, channel_offsets, channel_ok, x0, y0, (1 - fx) * (1 - fy), height, width,
                              stride_h, stride_w, PADDING)
                total += _tap(image_ptr, channel_offsets, channel_ok, x1, y0, fx * (1 - fy), height, width,
                              stride_h, stride_w, PADDING)
                total += _tap(image_ptr, channel_offsets, channel_ok, x0, y1, (1 - fx) * fy, height, width,
                              stride_h, stride_w, PADDING)
                total += _tap(image_ptr, channel_offsets, channel_ok, x1, y1, fx * fy, height, width,
                              stride_h, stride_w, PADDING)
    return total / (taps_x * taps_y).to(COMPUTE)


@triton.jit
def _store_tile(out_ptr, values, image, pixels, pixel_ok, channels, out_stride_n, out_stride_c, out_stride_pixel,
                BLOCK_C: tl.constexpr):
    """values (BLOCK_C, BLOCK) written to the output (N, C, Ho, Wo) in its dtype and layout: channels first
    (pixel stride 1, channel stride Ho Wo) or channels last (pixel stride C, channel stride 1), the flat
    pixel p = i Wo + j at p * out_stride_pixel either way. Lanes past the image's last pixel or last channel
    write nothing."""
    channel = tl.arange(0, BLOCK_C)
    offsets = (image.to(tl.int64) * out_stride_n + channel[:, None] * out_stride_c
               + pixels[None, :].to(tl.int64) * out_stride_pixel)
    tl.store(out_ptr + offsets, values.to(out_ptr.dtype.element_ty),
             mask=(channel[:, None] < channels) & pixel_ok[None, :])


@triton.jit
def _adjust_tile(v, image, channels, shift_ptr, factor_ptr, mean_ptr, std_ptr, value_range,
                 LIGHTING: tl.constexpr, NORMALISE: tl.constexpr, BLOCK_C: tl.constexpr):
    """render's work on a warped tile, pets.augment.adjust's formulas, while the tile is in registers:
        v = v / value_range;  with LIGHTING: v = sigmoid((logit(clamp(v, 1e-6, 1 - 1e-6)) + shift) factor);
        v = clamp(v, 0, 1);  with NORMALISE: v = (v - mean[c]) / std[c]."""
    v = v / value_range
    if LIGHTING:
        shift = tl.load(shift_ptr + image)
        factor = tl.load(factor_ptr + image)
        v = tl.minimum(tl.maximum(v, 1e-6), 1 - 1e-6)
        z = (tl.log(v / (1 - v)) + shift) * factor
        v = 1 / (1 + tl.exp(-z))
    v = tl.minimum(tl.maximum(v, 0.0), 1.0)
    if NORMALISE:
        channel = tl.arange(0, BLOCK_C)
        channel_ok = channel < channels
        mean = tl.load(mean_ptr + channel, mask=channel_ok, other=0.0)
        std = tl.load(std_ptr + channel, mask=channel_ok, other=1.0)
        v = (v - mean[:, None]) / std[:, None]
    return v


@triton.jit
def _warp_kernel(input_ptr, maps_ptr, taps_ptr, out_ptr, shift_ptr, factor_ptr, mean_ptr, std_ptr, value_range,
                 channels, height, width, out_height, out_width, stride_n, stride_c, stride_h, stride_w,
                 out_stride_n, out_stride_c, out_stride_pixel,
                 MODE: tl.constexpr, PADDING: tl.constexpr, ALIGN_CORNERS: tl.constexpr, RENDER: tl.constexpr,
                 LIGHTING: tl.constexpr, NORMALISE: tl.constexpr, BLOCK: tl.constexpr, BLOCK_C: tl.constexpr,
                 COMPUTE: tl.constexpr):
    """Program (t, n) of the grid (ceil(Ho Wo / BLOCK), N): output pixels t BLOCK ... t BLOCK + BLOCK - 1
    (flat, row by row) of image n, sampled (_sample_tile), with RENDER adjusted (_adjust_tile), then stored.
    The last tile of an image runs past its last pixel: those lanes are masked off (pixel_ok) and their
    results never stored. The pointers and flags of the adjustment are unused without RENDER."""
    image = tl.program_id(1)
    pixels = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    out_pixels = out_height * out_width
    pixel_ok = pixels < out_pixels
    values = _sample_tile(input_ptr, maps_ptr, taps_ptr, image, pixels, out_width, channels, height, width,
                          stride_n, stride_c, stride_h, stride_w, MODE, PADDING, ALIGN_CORNERS, BLOCK_C, COMPUTE)
    if RENDER:
        values = _adjust_tile(values, image, channels, shift_ptr, factor_ptr, mean_ptr, std_ptr, value_range,
                              LIGHTING, NORMALISE, BLOCK_C)
    _store_tile(out_ptr, values, image, pixels, pixel_ok, channels, out_stride_n, out_stride_c, out_stride_pixel,
                BLOCK_C)


# Output pixels per program: 256 on a GPU; up to 4096 under the interpreter (fewer, larger programs run
# faster there). A test lowers the latter to run the multi-tile path, masked last tile included, on the CPU.
GPU_BLOCK, INTERPRETER_BLOCK = 256, 4096


def _launch(input, matrices, size, mode, padding_mode, align_corners, antialias, dtype, render=None, plan=None,
            memory_format=torch.contiguous_format):
    """The host's share, then the one launch: warp.sampling_plan's pixel maps and taps laid out for the
    kernel (maps (N, 9) in the coordinates' dtype, int32 taps (N, 2), on the input's device), the output
    (N, C, height, width) in `dtype`, and the grid.

    On a GPU a program takes 256 pixels x BLOCK_C channels, 4 warps, and keeps a * x + c as a multiply and
    an add (no fused multiply-add), so that its rounding is warp.py's. Under the interpreter each program is
    a round of NumPy calls, so fewer, larger programs run faster: up to 4096 pixels each.
    render: None, or the (shift, factor, mean, std) tensors or None of render (float32, on the device).
    plan: (pixel_maps, taps) from warp.sampling_plan, made beforehand and already on the input's device;
        without it, the plan is made where the matrices are and sent in one copy that does not wait
        (warp.to_device).
    """
    output_size = (size, size) if isinstance(size, int) else tuple(size)
    if plan is None:
        plan = W.to_device(input.device, *W.sampling_plan(input, matrices, output_size, mode, padding_mode,
                                                            align_corners, antialias))
    pixel_maps, taps = plan
    if len(input) > 65535:
        raise ValueError(f"warp_triton takes at most 65535 images per call (a GPU grid's limit), got {len(input)}")
    maps = pixel_maps.reshape(-1, 9).contiguous()
    taps = taps.to(dtype=torch.int32).contiguous()
    n, channels, height, width = input.shape
    out = torch.empty(n, channels, *output_size, dtype=dtype, device=input.device)
    out = out.contiguous(memory_format=memory_format)
    if out.numel() == 0:
        return out
    out_pixels = output_size[0] * output_size[1]
    options = dict(COMPUTE=tl.float64 if input.dtype == torch.float64 else tl.float32,
                   BLOCK_C=triton.next_power_of_2(channels))
    if input.is_cuda:
        options.update(BLOCK=GPU_BLOCK, num_warps=4, enable_fp_fusion=False)
    else:
        options.update(BLOCK=min(INTERPRETER_BLOCK, triton.next_power_of_2(out_pixels)))
    shift, factor, mean, std = render or (None,) * 4
    unused = maps  # any tensor will do for a pointer the kernel never reads
    _warp_kernel[(triton.cdiv(out_pixels, options['BLOCK']), n)](
        input, maps, taps, out, *(unused if t is None else t for t in (shift, factor, mean, std)),
        255.0 if input.dtype == torch.uint8 else 1.0, channels, height, width, *output_size, *input.stride(),
        out.stride(0), out.stride(1), out.stride(3),
        MODE=mode, PADDING=padding_mode, ALIGN_CORNERS=bool(align_corners), RENDER=render is not None,
        LIGHTING=shift is not None, NORMALISE=mean is not None, **options)
    return out


def warp(input, matrices, size, mode='bilinear', padding_mode='reflection', align_corners=True, antialias=True):
    """minigrad.warp.warp as one Triton kernel: out = input read through the output->input homographies
    `matrices` (N, 3, 3), resampled once to `size`, antialiased where the map shrinks the image more than ~3x.

    The same arguments and result as warp.warp, to rounding (the same precision: float32, float64 for
    float64 input; no gradient: augmentation needs none).
    input: (N, C, H, W) uint8 or floating point, any strides (read in place, not copied), on a CUDA device,
    or on the CPU under TRITON_INTERPRET=1. Returns (N, C, height, width): float32 for uint8 input, else
    input's dtype.
    """
    dtype = input.dtype if input.is_floating_point() else torch.float32
    return _launch(input, matrices, size, mode, padding_mode, align_corners, antialias, dtype)


def render(input, matrices, size, mode='bilinear', padding_mode='reflection', align_corners=True, shift=None,
           factor=None, mean=None, std=None, dtype=torch.float32, antialias=True, plan=None,
           memory_format=torch.contiguous_format):
    """The augmented batch in one kernel: warp, then per image the lighting change, then per channel the
    normalisation, each output value computed in registers and written once.

        v = warp(input)[n, c] / value_range          (255 for uint8 input, 1 for floats in [0, 1])
        v = sigmoid((logit(v) + shift[n]) factor[n])  (with shift and factor; pets.augment.adjust)
        v = clamp(v, 0, 1)
        v = (v - mean[c]) / std[c]                   (with mean and std)

    Args:
        input, matrices, size, mode, padding_mode, align_corners, antialias: as warp.
        shift, factor: (N,) lighting per image, or None for none.
        mean, std: per-channel sequences or tensors, or None for no normalisation.
        dtype: of the result: torch.float32, torch.float16 or torch.bfloat16.
        plan: (pixel_maps, taps) on the input's device, made beforehand (see _launch).
        memory_format: of the result: torch.contiguous_format (channels first) or torch.channels_last, the
            layout a model in channels-last memory reads fastest; written so directly, not converted after.
    Tensors not yet on the input's device (shift, factor, mean, std) are sent there in one copy that does
    not wait (warp.to_device).
    Returns:
        (N, C, height, width) in `dtype`.
    """
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype={dtype} is not torch.float32, torch.float16 or torch.bfloat16")
    if (shift is None) != (factor is None) or (mean is None) != (std is None):
        raise ValueError("shift and factor go together, and so do mean and std")
    if memory_format not in (torch.contiguous_format, torch.channels_last):
        raise ValueError(f"memory_format={memory_format} is not torch.contiguous_format or torch.channels_last")
    n, channels = input.shape[:2]

    def per(values, count):  # float32, `count` of them (one per image or per channel)
        if values is None:
            return None
        values = torch.as_tensor(values, dtype=torch.float32).reshape(-1)
        if len(values) != count:
            raise ValueError(f"expected {count} values (one per image or channel), got {len(values)}")
        return values.contiguous()

    adjustment = W.to_device(input.device, per(shift, n), per(factor, n), per(mean, channels), per(std, channels))
    return _launch(input, matrices, size, mode, padding_mode, align_corners, antialias, dtype, render=adjustment,
                   plan=plan, memory_format=memory_format)
