"""Int8 from scratch: symmetric vs asymmetric, per-tensor vs per-channel (per-token),
absmax vs percentile calibration, on every weight and every layer input of a real model.

The integers come out equal to PyTorch's own quantizers (checked first, on this model's
weights); then each scheme quantizes -> dequantizes every linear layer's weight, and every
layer's input on a calibration text (Hamlet), and the error is measured per layer:
weights by ||W - W^|| / ||W||, inputs by the error of the layer's output, token by token.

Run: python -m sprints.14_quantization.results.int8_from_scratch
     python -m sprints.14_quantization.results.int8_from_scratch --model sprint09
"""

from __future__ import annotations

import argparse
import statistics
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from llmlab import quantization as Q
from llmlab.cli import positive_int, run, torch_threads
from llmlab.device import seed_everything
from llmlab.evaluation import CausalLMAdapter
from llmlab.plotting import plot_curves
from llmlab.runs import make_writer, run_dir

SPRINT = "14_quantization"
WEIGHT_SCHEMES = {
    "sym per-tensor": Q.QScheme(),
    "asym per-tensor": Q.QScheme(symmetric=False),
    "sym per-channel": Q.QScheme(per_channel=True),
    "sym per-tensor p99.99": Q.QScheme(calibration="percentile", percentile=99.99),
}
# activations, as (tokens, features): per-channel along axis 0 is one scale per token
ACT_SCHEMES = {
    "sym per-tensor": Q.QScheme(),
    "asym per-tensor": Q.QScheme(symmetric=False),
    "sym per-tensor p99.99": Q.QScheme(calibration="percentile", percentile=99.99),
    "sym per-token": Q.QScheme(per_channel=True),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", choices=Q.LM_CHOICES, default="smollm2",
                   help="smollm2 (bundled), sprint09 (your newest run) or tiny (random)")  # fmt: skip
    p.add_argument("--calib-tokens", type=positive_int, default=256,
                   help="tokens of Hamlet run through the model to record layer inputs")  # fmt: skip
    p.add_argument("--block-size", type=positive_int, default=128,
                   help="window length (capped at the model's context)")  # fmt: skip
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="seed (weights of --model tiny)")
    p.add_argument("--device", default="cpu", choices=["cpu"],
                   help="quantized tensors here are CPU-only")  # fmt: skip
    return p


def parity_with_torch(weight: torch.Tensor) -> dict[str, int]:
    """Integers of our quantizer vs torch.quantize_per_channel / per_tensor on one weight."""
    out = {}
    for name, scheme in (("per-channel sym", Q.QScheme(per_channel=True, narrow=False)),
                         ("per-tensor asym", Q.QScheme(symmetric=False))):  # fmt: skip
        scale, zp = Q.qparams(*Q.observe_range(weight, scheme), scheme)
        ours = Q.quantize(weight, scale, zp, scheme)
        with warnings.catch_warnings():  # quantized tensors are deprecated with torch.ao
            warnings.simplefilter("ignore")
            if scheme.per_channel:
                ref = torch.quantize_per_channel(weight, scale.double(), zp, 0, torch.qint8)
            else:
                ref = torch.quantize_per_tensor(weight, float(scale), int(zp), torch.quint8)
        out[name] = int((ours != ref.int_repr().int()).sum())
    return out


@torch.no_grad()
def activation_errors(
    model: torch.nn.Module, batches: list[torch.Tensor]
) -> dict[str, dict[str, float]]:
    """Per layer and scheme: token-averaged error of the layer output when its input (only)
    is quantized -> dequantized with the scheme; plus the input's largest |x|."""
    layers = Q.linear_layers(model)
    errors: dict[str, dict[str, list[float]]] = {n: {s: [] for s in ACT_SCHEMES} for n in layers}

    def hook(name: str):
        def record(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
            x = args[0].reshape(-1, args[0].shape[-1]).float()
            for scheme_name, scheme in ACT_SCHEMES.items():
                x_hat = Q.fake_quantize(x, scheme, axis=0)
                y_hat = F.linear(x_hat, module.weight.float(), module.bias)
                errors[name][scheme_name].append(Q.row_error(out.reshape(x.shape[0], -1), y_hat))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    adapter = CausalLMAdapter(model)
    try:
        for batch in batches:
            adapter(batch)
    finally:
        for h in handles:
            h.remove()
    return {n: {s: statistics.mean(v) for s, v in d.items()} for n, d in errors.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    with torch_threads(args.threads):
        return _main(args)


def _main(args: argparse.Namespace) -> dict[str, Any]:
    seed_everything(args.seed)
    model, tok, context = Q.load_lm(args.model, args.seed)
    block = min(args.block_size, context)
    batches = Q.calibration_batches(tok, args.calib_tokens, block)
    out_dir = run_dir(SPRINT, "int8_from_scratch")
    writer = make_writer(out_dir)
    layers = Q.linear_layers(model)
    names = list(dict.fromkeys(layers))
    first = next(iter(layers.values())).weight.detach().float()
    results: dict[str, Any] = {"model": args.model, "layers": len(names), "out_dir": str(out_dir)}
    results["parity_mismatches"] = parity_with_torch(first)
    print(f"{args.model}: {len(names)} linear layers. Our integers vs torch.quantize_per_*"
          f" on {names[0]}: {results['parity_mismatches']} mismatches")  # fmt: skip

    # Weights: every scheme on every layer.
    w_err = {s: [Q.quant_error(lin.weight, Q.fake_quantize(lin.weight.detach(), sch))["rel_error"]
                 for lin in layers.values()] for s, sch in WEIGHT_SCHEMES.items()}  # fmt: skip
    # Inputs: recorded on the calibration text.
    a_err = activation_errors(model, batches)
    a_by_scheme = {s: [a_err[n][s] for n in names] for s in ACT_SCHEMES}

    print(f"\nweights (relative error, mean / worst over {len(names)} layers):")
    for s, errs in w_err.items():
        worst = names[max(range(len(errs)), key=errs.__getitem__)]
        print(f"  {s:<24} {statistics.mean(errs):7.2%} / {max(errs):7.2%}  ({worst})")
        results[f"weight_{s}_mean"] = statistics.mean(errs)
    print(f"\nlayer inputs on {args.calib_tokens} Hamlet tokens (error of the layer output, "
          "per token, mean / worst layer):")  # fmt: skip
    for s, errs in a_by_scheme.items():
        worst = names[max(range(len(errs)), key=errs.__getitem__)]
        print(f"  {s:<24} {statistics.mean(errs):7.2%} / {max(errs):7.2%}  ({worst})")
        results[f"act_{s}_mean"] = statistics.mean(errs)
        results[f"act_{s}_worst"] = max(errs)
        results[f"act_{s}_worst_layer"] = worst
    for i in range(len(names)):
        for s in ACT_SCHEMES:
            writer.add_scalar(f"act_error/{s}", a_by_scheme[s][i], i)
        for s in WEIGHT_SCHEMES:
            writer.add_scalar(f"weight_error/{s}", w_err[s][i], i)
    writer.close()
    xs = {s: range(len(names)) for s in list(WEIGHT_SCHEMES) + list(ACT_SCHEMES)}
    results["weights_png"] = str(plot_curves(
        {s: [100 * e for e in v] for s, v in w_err.items()}, out_dir / "weight_error_per_layer.png",
        title=f"{args.model}: weight quantization error per layer (int8)",
        xlabel="linear layer (in model order)", ylabel="relative error (%)", xs=xs, logy=True,
    ))  # fmt: skip
    results["inputs_png"] = str(plot_curves(
        {s: [100 * e for e in v] for s, v in a_by_scheme.items()},
        out_dir / "input_error_per_layer.png",
        title=f"{args.model}: input quantization (int8) -> output error per layer",
        xlabel="linear layer (in model order)", ylabel="output error per token (%)", xs=xs,
        logy=True,
    ))  # fmt: skip
    print(f"\npictures: {results['weights_png']}, {results['inputs_png']}")
    return results


if __name__ == "__main__":
    raise SystemExit(run(main))
