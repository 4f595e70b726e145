"""Mixed precision that fits the device (issue 28), tested on the CPU by substituting the device's properties:
bf16 where it is native, fp16 with loss scaling on CUDA GPUs that only emulate bf16 (T4, V100), fp32 elsewhere."""
import pytest
import torch
from mri_diffusion_nb.unet import autocast_dtype, bf16_native
from mri_diffusion_nb.training import train_precision


def _gpu(monkeypatch, native:bool):
    "Pretend a CUDA GPU is present: an Ampere-or-newer one (native bf16) or a T4/V100 (bf16 emulated)."
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: native or including_emulation)


def _cpu(monkeypatch, native:bool):
    for f in ('_is_avx512_bf16_supported', '_is_amx_tile_supported'):
        monkeypatch.setattr(torch.cpu, f, lambda: native, raising=False)


def test_t4_gets_fp16_with_a_scaler(monkeypatch):
    _gpu(monkeypatch, native=False)
    assert torch.cuda.is_bf16_supported()            # what the old test trusted: True on a T4
    assert not bf16_native('cuda') and autocast_dtype('cuda') == torch.float16
    mp, why = train_precision('bf16', 'cuda')
    assert mp == 'fp16' and 'fp16' in why and 'scaler' in why
    assert train_precision('no', 'cuda') == ('no', None) and train_precision('fp16', 'cuda') == ('fp16', None)


def test_ampere_keeps_bf16(monkeypatch):
    _gpu(monkeypatch, native=True)
    assert bf16_native('cuda') and autocast_dtype('cuda') == torch.bfloat16
    assert train_precision('bf16', 'cuda') == ('bf16', None)


@pytest.mark.parametrize('native', [True, False])
def test_cpu_bf16_only_where_native(monkeypatch, native):
    _cpu(monkeypatch, native)
    assert autocast_dtype('cpu') == (torch.bfloat16 if native else None)
    mp, why = train_precision('bf16', 'cpu')
    assert (mp, why is None) == (('bf16', True) if native else ('no', False))
    if not native: assert 'fp32' in why
