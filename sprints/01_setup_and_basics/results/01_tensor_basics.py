"""Tensor basics: creation, arithmetic, indexing, view/reshape/permute and device moves.

Run: python -m sprints.01_setup_and_basics.results.01_tensor_basics --device auto
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from llmlab.cli import run
from llmlab.device import get_device, seed_everything


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", default="auto", help="device to move a tensor to: auto, cpu, cuda, mps"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the random tensors")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    seed_everything(args.seed)
    device = get_device(args.device)

    # 1. Creation: from data, from NumPy (shares memory!), and by shape.
    a = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    from_np = torch.from_numpy(arr)
    arr[0, 0] = 100.0  # the tensor sees this: from_numpy does not copy
    shares_numpy_memory = float(from_np[0, 0] == 100.0)
    zeros, ones = torch.zeros(2, 3), torch.ones(2, 3)
    ramp = torch.arange(0, 12)  # int64: integer arguments give an integer tensor
    grid = torch.linspace(0.0, 1.0, steps=5)
    noise = torch.randn(1000)
    print(f"a = {a.tolist()}  shape {tuple(a.shape)} dtype {a.dtype}")
    print(f"arange dtype {ramp.dtype}, linspace {grid.tolist()}")
    print(f"zeros+ones sum {float((zeros + ones).sum())}; randn mean {noise.mean():.3f}")

    # 2. Arithmetic: element-wise, matrix product, broadcasting.
    b = torch.tensor([[10.0, 20.0, 30.0]])  # shape (1, 3) broadcasts over the rows of a
    elementwise = a * 2 + 1
    broadcast = a + b
    matmul = a @ a.T  # (2, 3) @ (3, 2) -> (2, 2)
    print(f"a*2+1 = {elementwise.tolist()}")
    print(f"a + [[10,20,30]] (broadcast) = {broadcast.tolist()}")
    print(f"a @ a.T = {matmul.tolist()}")

    # 3. Indexing: slices, boolean masks, fancy indexing.
    m = torch.arange(12).reshape(3, 4)
    print(f"m = {m.tolist()}")
    print(f"m[1] = {m[1].tolist()}, m[:, 2] = {m[:, 2].tolist()}, m[m > 8] = {m[m > 8].tolist()}")
    print(f"m[[0, 2]][:, [1, 3]] = {m[[0, 2]][:, [1, 3]].tolist()}")

    # 4. view / reshape / permute: same numbers, different layout.
    v = m.view(4, 3)
    v_shares_storage = float(v.data_ptr() == m.data_ptr())
    p = m.permute(1, 0)  # (4, 3), but strides are swapped: no longer contiguous
    try:
        p.view(12)
        view_after_permute_ok = 1.0
    except RuntimeError:
        view_after_permute_ok = 0.0  # view needs contiguous memory ...
    flat = p.reshape(12)  # ... reshape copies when it must
    print(
        f"view shares storage: {bool(v_shares_storage)}; permuted contiguous: {p.is_contiguous()}"
    )
    print(f"view after permute works: {bool(view_after_permute_ok)}; reshape gives {flat.tolist()}")
    images = torch.rand(8, 28, 28, 3)  # NHWC, as images come from PIL/NumPy
    nchw = images.permute(0, 3, 1, 2)  # NCHW, what nn.Conv2d expects
    print(f"NHWC {tuple(images.shape)} -> NCHW {tuple(nchw.shape)}")

    # 5. Device moves: .to(device) copies; results must be brought back for NumPy.
    on_device = a.to(device)
    back = (on_device * 2).cpu()
    device_roundtrip_ok = float(torch.equal(back, a * 2))
    print(
        f"device {device}: tensor on {on_device.device}, round trip equal: {bool(back.equal(a * 2))}"
    )

    return {
        "matmul_trace": float(matmul.trace()),
        "broadcast_sum": float(broadcast.sum()),
        "masked_count": float((m > 8).sum()),
        "shares_numpy_memory": shares_numpy_memory,
        "view_shares_storage": v_shares_storage,
        "permute_contiguous": float(p.is_contiguous()),
        "view_after_permute_ok": view_after_permute_ok,
        "nchw_channels": float(nchw.shape[1]),
        "device_roundtrip_ok": device_roundtrip_ok,
    }


if __name__ == "__main__":
    raise SystemExit(run(main))
