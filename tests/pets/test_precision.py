"""Choosing the precision for the hardware (pets.precision); the learner's side is in test_learner.py."""
import pytest
import torch

from pets import precision as P


@pytest.mark.parametrize('device, native, expected', [
    ('cpu', True, 'bf16'),      # avx512_bf16 / AMX: bfloat16 autocast
    ('cpu', False, 'fp32'),     # emulated bfloat16 is slower than float32
    ('cuda', True, 'bf16'),     # Ampere and later
    ('cuda', False, 'fp16'),    # older GPUs: float16 with loss scaling
])
def test_auto_takes_bfloat16_where_the_hardware_has_it(monkeypatch, device, native, expected):
    monkeypatch.setattr(P, 'native_bfloat16', lambda device: native)
    precision, why = P.choose_precision(device)
    assert precision == expected and why.startswith('auto: this ')


def test_an_asked_for_precision_is_taken_and_fp16_on_a_cpu_is_bfloat16():
    assert P.choose_precision('cpu', 'fp32') == ('fp32', 'asked for')
    assert P.choose_precision('cuda', 'fp16') == ('fp16', 'asked for')
    assert P.choose_precision('cpu', 'fp16')[0] == 'bf16'
    with pytest.raises(ValueError, match="precision 'half': choose one of auto, fp32, bf16, fp16"):
        P.choose_precision('cpu', 'half')


def cpu_flags():
    """The CPU's feature flags as the operating system reports them (Linux's /proc/cpuinfo), or None."""
    try:
        with open('/proc/cpuinfo') as file:
            return next(set(line.split(':', 1)[1].split()) for line in file if line.startswith('flags'))
    except (OSError, StopIteration):
        return None


def test_this_cpu_is_judged_as_its_flags_say():
    """torch's detection against an independent source, the flags the kernel reports: native bfloat16 is
    avx512_bf16 or AMX's bfloat16 tiles (amx_bf16)."""
    flags = cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo to check torch's CPU detection against")
    assert P.native_bfloat16('cpu') == bool(flags & {'avx512_bf16', 'amx_bf16'})
    assert P.native_bfloat16('meta') is False


@pytest.mark.parametrize('avx512_bf16, amx, expected', [(False, False, False), (True, False, True), (False, True, True)])
def test_native_bfloat16_follows_the_cpu_features_torch_detects(monkeypatch, avx512_bf16, amx, expected):
    """Either feature alone is native bfloat16; neither is not (so a CPU without them trains in float32)."""
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: amx)
    assert P.native_bfloat16('cpu') is expected
    assert P.choose_precision('cpu')[0] == ('bf16' if expected else 'fp32')
