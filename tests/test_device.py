"""The trainer's device and precision are chosen by the machine, or refused clearly."""

from __future__ import annotations

import pytest

from store.db.models import RunStatus, TrainingRun
from store.db.session import session_scope
from trainer.config import ConfigError, load_config
from trainer.device import PlacementError, choose_placement
from trainer.round import RoundContext, train_once


def test_auto_takes_the_gpu_in_bf16_where_there_is_one_and_the_cpu_in_float32() -> None:
    gpu = choose_placement("auto", "auto", cuda_devices=1, cuda_bf16=True)
    assert (gpu.device, gpu.precision) == ("cuda", "bfloat16")
    old_gpu = choose_placement("auto", "auto", cuda_devices=2, cuda_bf16=False)
    assert (old_gpu.device, old_gpu.precision) == ("cuda", "float32")
    cpu = choose_placement("auto", "auto", cuda_devices=0, cuda_bf16=False)
    assert (cpu.device, cpu.precision) == ("cpu", "float32")
    assert "no CUDA device" in cpu.why
    # set explicitly, kept
    assert choose_placement("cuda:1", "float32", cuda_devices=2, cuda_bf16=True).device == "cuda:1"
    assert choose_placement("cpu", "bfloat16", cuda_devices=0, cuda_bf16=False).precision == (
        "bfloat16"
    )


@pytest.mark.parametrize(
    "device, gpus, message",
    [
        ("cuda", 0, "no CUDA device"),
        ("cuda:2", 2, "sees 2 CUDA devices"),
        ("tpu", 0, "device must be"),
    ],
)
def test_a_device_the_machine_lacks_is_refused(device: str, gpus: int, message: str) -> None:
    with pytest.raises(PlacementError, match=message):
        choose_placement(device, "auto", cuda_devices=gpus, cuda_bf16=True)


def test_the_config_refuses_unknown_devices_and_precisions() -> None:
    assert load_config(None, ["device=cuda:0", "precision=bfloat16"]).device == "cuda:0"
    with pytest.raises(ConfigError, match="device must be"):
        load_config(None, ["device=gpu"])
    with pytest.raises(ConfigError, match="precision must be"):
        load_config(None, ["precision=int8"])


def test_a_round_asked_for_a_missing_gpu_fails_with_the_reason(ctx: RoundContext) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    outcome = train_once(ctx, load_config(None, ["device=cuda"]))
    assert outcome.status is RunStatus.FAILED
    assert "no CUDA device" in (outcome.reason or "")
    with session_scope(ctx.sessions) as s:
        run = s.get_one(TrainingRun, outcome.run_id)
        assert run.status is RunStatus.FAILED and "no CUDA device" in (run.reason or "")
