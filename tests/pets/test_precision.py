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


def test_this_machine_is_asked_through_torch():
    assert isinstance(P.native_bfloat16('cpu'), bool)
    assert P.native_bfloat16('meta') is False
    if torch.cpu._is_avx512_bf16_supported():  # this project's CI machines: AMD EPYC with avx512_bf16
        assert P.choose_precision('cpu') == ('bf16', 'auto: this CPU computes bfloat16 natively')
