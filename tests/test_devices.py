"""Device and precision settings: resolution, errors, and what stays float32."""

import pytest
import torch

from equireg import devices


def test_auto_is_cuda_only_when_available_and_cpu_is_always_there():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert devices.resolve_device("auto").type == expected
    assert devices.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA device"):
        devices.resolve_device("cuda")


def test_unknown_settings_are_errors():
    with pytest.raises(ValueError, match="expected one of auto, cpu, cuda"):
        devices.resolve_device("tpu")
    with pytest.raises(ValueError, match="expected one of auto, fp32, bf16"):
        devices.resolve_precision("fp16", torch.device("cpu"))


def test_auto_precision_follows_native_bf16():
    cpu = torch.device("cpu")
    assert devices.resolve_precision("auto", cpu) == ("bf16" if devices.native_bf16(cpu) else "fp32")
    assert devices.resolve_precision("fp32", cpu) == "fp32" and devices.resolve_precision("bf16", cpu) == "bf16"


def test_bf16_autocasts_products_and_full_precision_keeps_float32():
    cpu = torch.device("cpu")
    a = torch.rand(4, 4)
    with devices.autocast(cpu, "bf16"):
        assert (a @ a).dtype == torch.bfloat16
        with devices.full_precision(a.bfloat16()) as (b,):
            assert b.dtype == torch.float32 and (b @ b).dtype == torch.float32
    with devices.autocast(cpu, "fp32"):
        assert (a @ a).dtype == torch.float32
