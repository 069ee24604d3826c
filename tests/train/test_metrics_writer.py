"""lsc.train.metrics.MetricsWriter: TensorBoard scalars a reader gets back, written in a fresh
interpreter without importing PyTorch (installed with the test extra)."""

import os
import struct
import subprocess
import sys
import textwrap

import pytest

from jax_subprocess import ROOT

CHILD = textwrap.dedent("""
    import sys
    from lsc.train import metrics
    writer = metrics.MetricsWriter(sys.argv[1])
    writer.scalars(3, {"loss": 0.25, "nan": float("nan")}, "train")
    writer.scalars(4, {"loss": 0.125}, "train")
    writer.close()
    print("torch imported:", "torch" in sys.modules)
""")


def read_scalars(logdir: str) -> list:
    """``(tag, step, value)`` of every scalar in ``logdir``'s event files (TFRecord framing:
    length u64, its CRC u32, the ``Event`` proto, its CRC u32)."""
    from tensorboardX.proto import event_pb2

    out = []
    for name in sorted(os.listdir(logdir)):
        with open(os.path.join(logdir, name), "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            out += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
    return out


def test_scalars_are_written_without_importing_torch(tmp_path):
    pytest.importorskip("torch")  # what is avoided; without it there is nothing to check
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch imported: False" in proc.stdout
    assert read_scalars(str(tmp_path)) == [("train/loss", 3, 0.25), ("train/loss", 4, 0.125)]
