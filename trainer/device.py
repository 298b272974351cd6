"""Where the trainer's models run and in what precision: chosen by the machine.

`auto` puts the policy and the reward model on the first CUDA device when torch sees one,
in bf16 where that GPU supports it (the LoRA adapters themselves stay float32: peft
upcasts adapter weights, so the optimizer steps are not taken in bf16), and on the CPU in
float32 otherwise: the CPU path's log-probs and the KL are what every figure in
docs/benchmarks.md was measured with. Either can be set (`device`, `precision` in the
trainer's config); the run records what was chosen and why.

Losses and advantages are computed on the CPU in float32 whatever the device: the models'
per-token log-probs come back as float32 CPU tensors that keep their graph (a device copy
is differentiable), so the learners need no device of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu", "cuda", "cuda:1"
    precision: str  # "float32" or "bfloat16"
    why: str

    def dtype(self) -> Any:
        import torch

        return torch.bfloat16 if self.precision == "bfloat16" else torch.float32

    def describe(self) -> str:
        return f"{self.device}, {self.precision} ({self.why})"


CPU = Placement("cpu", "float32", "the CPU path")


class PlacementError(ValueError):
    pass


def choose_placement(
    device: str, precision: str, *, cuda_devices: int, cuda_bf16: bool
) -> Placement:
    """The placement `device` and `precision` ask for on a machine with `cuda_devices`
    GPUs (bf16-capable or not). Asking for CUDA where there is none is an error, not a
    silent fall back to the CPU."""
    if device == "auto":
        device = "cuda" if cuda_devices > 0 else "cpu"
        why = "a CUDA device is present" if cuda_devices > 0 else "no CUDA device"
    else:
        why = "set in the config"
    if device.startswith("cuda"):
        index = device.partition(":")[2]
        if cuda_devices == 0:
            raise PlacementError(f"device = {device!r}, but torch sees no CUDA device")
        if index and (not index.isdigit() or int(index) >= cuda_devices):
            raise PlacementError(f"device = {device!r}: torch sees {cuda_devices} CUDA devices")
    elif device != "cpu":
        raise PlacementError(f"device must be auto, cpu, cuda or cuda:N, not {device!r}")
    if precision == "auto":
        gpu_bf16 = device.startswith("cuda") and cuda_bf16
        precision = "bfloat16" if gpu_bf16 else "float32"
        why += ", bf16 on the GPU" if gpu_bf16 else ", float32"
    elif precision not in PRECISIONS:
        raise PlacementError(f"precision must be one of {', '.join(PRECISIONS)}")
    elif precision == "bfloat16" and device == "cpu":
        why += "; bf16 on the CPU (slower than float32 where the CPU has no bf16 units)"
    return Placement(device, precision, why)


def placement_for(device: str, precision: str) -> Placement:
    """`choose_placement` on this machine, as torch sees it."""
    import torch

    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    bf16 = bool(cuda) and bool(torch.cuda.is_bf16_supported())
    return choose_placement(device, precision, cuda_devices=cuda, cuda_bf16=bf16)
