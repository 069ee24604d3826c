"""The accelerators :mod:`lsc.plan` plans for: peak dense FLOP/s per device and memory per device,
as their vendors' datasheets state them.

Memory is counted as the datasheet writes it: NVIDIA's "GB" and Google's "GB" are 10^9 bytes,
Google's "GiB" (TPU v4) 2^30 bytes. The memory a program can use is somewhat less (the runtime,
the CUDA context, XLA's own reservations), which the planner's headroom stands for.

Sources (checked against the vendors' pages):

* NVIDIA H100 SXM: 989 TFLOP/s dense bf16 (the datasheet's 1,979 is "with sparsity"; dense is
  half), 67 TFLOP/s fp32 (non-tensor), 80 GB HBM3 -- the H100 datasheet,
  https://www.nvidia.com/en-us/data-center/h100/ (see also the per-type table of
  https://glennklockwood.com/garden/processors/h100: BF16 matrix 989.4, FP32 66.9).
* NVIDIA H200 SXM: the H100's compute (the same GH100 die) with 141 GB HBM3e -- the H200
  datasheet, https://www.nvidia.com/en-us/data-center/h200/.
* NVIDIA A100 SXM 80GB: 312 TFLOP/s dense bf16, 19.5 TFLOP/s fp32, 80 GB HBM2e -- the A100
  datasheet, https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf.
* TPU v4: 275 TFLOP/s (bf16) per chip, 32 GiB HBM2 -- https://cloud.google.com/tpu/docs/v4.
* TPU v5e: 197 TFLOP/s (bf16) per chip, 16 GB HBM2 -- https://cloud.google.com/tpu/docs/v5e.
* TPU v5p: 459 TFLOP/s (bf16) per chip, 95 GB HBM2e -- https://cloud.google.com/tpu/docs/v5p.

The TPU pages state no float32 peak (float32 matmuls run as several bfloat16 passes); the table
has None there and the planner says so when the compute dtype is float32.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

GB = 10 ** 9
GIB = 2 ** 30
TERA = 10 ** 12


@dataclasses.dataclass(frozen=True)
class Device:
    """One accelerator (a GPU, or a TPU chip).

    Attributes:
      name: what the planner prints.
      bf16_flops: peak dense bfloat16 FLOP/s.
      fp32_flops: peak float32 FLOP/s, None where the datasheet gives none.
      memory_bytes: device memory in bytes.
      memory_text: the memory as the datasheet writes it.
      source: the datasheet's address.
    """

    name: str
    bf16_flops: float
    fp32_flops: Optional[float]
    memory_bytes: int
    memory_text: str
    source: str

    def peak_flops(self, compute_dtype: str) -> Optional[float]:
        """The peak FLOP/s for ``compute_dtype`` ('bfloat16' or 'float32')."""
        return self.bf16_flops if compute_dtype == "bfloat16" else self.fp32_flops


DEVICES = {
    "h100": Device("NVIDIA H100 SXM", 989 * TERA, 67 * TERA, 80 * GB, "80 GB",
                   "https://www.nvidia.com/en-us/data-center/h100/"),
    "h200": Device("NVIDIA H200 SXM", 989 * TERA, 67 * TERA, 141 * GB, "141 GB",
                   "https://www.nvidia.com/en-us/data-center/h200/"),
    "a100": Device("NVIDIA A100 SXM 80GB", 312 * TERA, 19.5 * TERA, 80 * GB, "80 GB",
                   "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
                   "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf"),
    "tpu_v4": Device("TPU v4 chip", 275 * TERA, None, 32 * GIB, "32 GiB",
                     "https://cloud.google.com/tpu/docs/v4"),
    "tpu_v5e": Device("TPU v5e chip", 197 * TERA, None, 16 * GB, "16 GB",
                      "https://cloud.google.com/tpu/docs/v5e"),
    "tpu_v5p": Device("TPU v5p chip", 459 * TERA, None, 95 * GB, "95 GB",
                      "https://cloud.google.com/tpu/docs/v5p"),
}
