"""PyTorch eager static quantization: QuantStub/DeQuantStub, fusion, calibration,
`prepare`/`convert`, and why the learner's static MLP ran slower than float32.

1. An MNIST-sized MLP (784-256-256-10) at batch 256, quantized with each backend's qconfig
   and packed for each engine, timed side by side with float32. The engine that packs the
   weights chooses the kernels: x86/fbgemm (AVX-512 here) are fast, qnnpack (written for
   ARM phones) is slower than float32 on this CPU. A second trap: QuantStub/DeQuantStub
   around every layer instead of once around the network.
2. The sprint-04 CNN (`llmlab.vision.MNISTCNN`), trained for one epoch on the offline MNIST
   subset, then fused (conv + batch-norm + ReLU, linear + ReLU), calibrated and converted:
   test accuracy, size and latency at batch 1 and 64, float32 vs int8 (x86 and qnnpack).

Run: python -m sprints.14_quantization.results.eager_static
     python -m sprints.14_quantization.results.eager_static --engines x86,fbgemm,qnnpack,onednn
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao import quantization as tq

from llmlab import quantization as Q
from llmlab.cli import positive_int, run, torch_threads
from llmlab.data.mnist import MNIST_MEAN, MNIST_STD, MNISTSubset
from llmlab.device import seed_everything
from llmlab.errors import LLMLabError
from llmlab.plotting import plot_bar_panels
from llmlab.runs import make_writer, run_dir
from llmlab.training import evaluate, train_one_epoch
from llmlab.vision import MNISTCNN

SPRINT = "14_quantization"
CNN_FUSE = [
    ["features.0.0", "features.0.1", "features.0.2"],  # conv + batch-norm + ReLU
    ["features.1.0", "features.1.1", "features.1.2"],
    ["classifier.1", "classifier.2"],  # linear + ReLU
]


class MLP(nn.Module):
    """784 -> 256 -> 256 -> 10 with ReLUs: the shape of a classic MNIST MLP."""

    def __init__(self, hidden: int = 256) -> None:
        super().__init__()
        self.fc1, self.relu1 = nn.Linear(784, hidden), nn.ReLU()
        self.fc2, self.relu2 = nn.Linear(hidden, hidden), nn.ReLU()
        self.fc3 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.relu2(self.fc2(self.relu1(self.fc1(x)))))


class StubbedEveryLayer(nn.Module):
    """The same MLP with quantize/dequantize around every linear layer: each ReLU runs in
    float between two int8 layers, so every layer pays a dequantize + requantize."""

    def __init__(self, mlp: MLP) -> None:
        super().__init__()
        self.layers = nn.ModuleList(tq.QuantWrapper(layer) for layer in (mlp.fc1, mlp.fc2, mlp.fc3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.layers[0](x))
        return self.layers[2](F.relu(self.layers[1](x)))


def engine_list(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    known = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    if not names or any(n not in known for n in names):
        raise argparse.ArgumentTypeError(f"engines must be among {', '.join(known)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--engines", type=engine_list, default=["x86", "fbgemm", "qnnpack"],
                   help="quantized engines to pack for (onednn works but takes seconds per "
                   "batch on this CPU)")  # fmt: skip
    p.add_argument("--mlp-batch", type=positive_int, default=256, help="MLP batch size")
    p.add_argument("--epochs", type=positive_int, default=1, help="CNN training epochs")
    p.add_argument("--train-images", type=positive_int, default=4000,
                   help="MNIST subset images to train on (at most 4,000)")  # fmt: skip
    p.add_argument("--calib-batches", type=positive_int, default=8,
                   help="batches of 32 training images for calibration")  # fmt: skip
    p.add_argument("--repeats", type=positive_int, default=20, help="timed calls per model")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and data order")
    p.add_argument("--device", default="cpu", choices=["cpu"],
                   help="quantized eager kernels run on the CPU only")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        return _main(args)


@torch.no_grad()
def mlp_part(args: argparse.Namespace) -> dict[str, Any]:
    mlp = MLP().eval()
    x = torch.randn(args.mlp_batch, 784, generator=torch.Generator().manual_seed(args.seed))
    calib = [x[i : i + 32] for i in range(0, min(len(x), 256), 32)]
    fuse = [["fc1", "relu1"], ["fc2", "relu2"]]
    models: dict[str, nn.Module] = {"float32": mlp}
    for engine in args.engines:
        models[f"packed for {engine}"] = Q.static_quantize(mlp, calib, fuse, engine)
    if "x86" in args.engines:
        models["x86, qnnpack's 8-bit qconfig"] = Q.static_quantize(
            mlp, calib, fuse, "x86", "qnnpack"
        )
        stubbed = Q.static_quantize(
            StubbedEveryLayer(copy.deepcopy(mlp)), calib, None, "x86", wrap=False
        )
        models["x86, stubs around every layer"] = stubbed
    ref = mlp(x)
    errors = {n: Q.quant_error(ref, m(x))["rel_error"] for n, m in models.items()}
    seconds = Q.time_side_by_side({n: (lambda m=m: m(x)) for n, m in models.items()}, args.repeats)
    print(f"MLP 784-256-256-10, batch {args.mlp_batch}, static int8, timed side by side:")
    print(f"  {'model':<34} {'ms':>8} {'vs float32':>10} {'output error':>12}")
    for name in models:
        print(f"  {name:<34} {seconds[name] * 1e3:>8.3f} {seconds['float32'] / seconds[name]:>9.2f}x "
              f"{errors[name]:>12.2%}")  # fmt: skip
    return {"ms": {n: s * 1e3 for n, s in seconds.items()}, "errors": errors}


def mnist_tensors(split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    ds = MNISTSubset(split)
    images = (ds.data[:limit].float() / 255 - MNIST_MEAN) / MNIST_STD
    return images.unsqueeze(1), ds.targets[:limit]


def cnn_part(args: argparse.Namespace) -> dict[str, Any]:
    if args.train_images > 4000:
        raise LLMLabError(
            "the offline MNIST subset has 4,000 training images: lower --train-images"
        )
    x_train, y_train = mnist_tensors("train", args.train_images)
    x_test, y_test = mnist_tensors("test")
    gen = torch.Generator().manual_seed(args.seed)
    model = MNISTCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(args.epochs):
        order = torch.randperm(len(x_train), generator=gen)
        batches = [(x_train[order[i : i + 64]], y_train[order[i : i + 64]])
                   for i in range(0, len(order), 64)]  # fmt: skip
        train_one_epoch(model, batches, optimizer, F.cross_entropy, "cpu", progress=True)
    model.eval()
    calib = [x_train[i : i + 32] for i in range(0, 32 * args.calib_batches, 32)]
    models: dict[str, nn.Module] = {"float32": model}
    for engine in [e for e in ("x86", "qnnpack") if e in args.engines]:
        models[f"int8 ({engine})"] = Q.static_quantize(model, calib, CNN_FUSE, engine)
    test = [(x_test[i : i + 250], y_test[i : i + 250]) for i in range(0, len(x_test), 250)]
    out: dict[str, Any] = {"accuracy": {}, "mib": {}, "ms_b1": {}, "ms_b64": {}}
    for name, m in models.items():
        out["accuracy"][name] = evaluate(m, test, F.cross_entropy, "cpu")["accuracy"]
        out["mib"][name] = Q.state_dict_bytes(m) / 2**20
    for batch, key in ((1, "ms_b1"), (64, "ms_b64")):
        xb = x_test[:batch]
        with torch.no_grad():
            calls = {n: (lambda m=m, xb=xb: m(xb)) for n, m in models.items()}
            s = Q.time_side_by_side(calls, args.repeats)
        out[key] = {n: v * 1e3 for n, v in s.items()}
    print(f"\nsprint-04 CNN after {args.epochs} epoch(s) on {len(x_train):,} images, "
          f"fused {len(CNN_FUSE)} groups, calibrated on {32 * args.calib_batches} images:")  # fmt: skip
    print(f"  {'model':<16} {'test acc.':>9} {'MiB':>6} {'ms b=1':>8} {'ms b=64':>8}")
    for name in models:
        print(f"  {name:<16} {out['accuracy'][name]:>9.2%} {out['mib'][name]:>6.2f} "
              f"{out['ms_b1'][name]:>8.3f} {out['ms_b64'][name]:>8.3f}")  # fmt: skip
    return out


def _main(args: argparse.Namespace) -> dict[str, Any]:
    seed_everything(args.seed)
    out_dir = run_dir(SPRINT, "eager_static")
    mlp = mlp_part(args)
    cnn = cnn_part(args)
    writer = make_writer(out_dir)
    for name, ms in mlp["ms"].items():
        writer.add_scalar(f"mlp_ms/{name.replace(' ', '_').replace(',', '')}", ms, 0)
    writer.close()
    names = list(mlp["ms"])
    png = plot_bar_panels(
        {"MLP, batch 256: speed-up over float32 (x)":
         (names, [mlp["ms"]["float32"] / mlp["ms"][n] for n in names]),
         "CNN, batch 64: speed-up over float32 (x)":
         (list(cnn["ms_b64"]), [cnn["ms_b64"]["float32"] / v for v in cnn["ms_b64"].values()])},
        out_dir / "eager_static.png", ylabel="x", columns=2,
        title="eager static int8: the engine that packed the weights decides",
    )  # fmt: skip
    print(f"picture: {png}")
    return {"mlp": mlp, "cnn": cnn, "png": str(png)}


if __name__ == "__main__":
    raise SystemExit(run(main))
