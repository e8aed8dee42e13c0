"""GHL as a plug-in on a model this project did not write: torchvision's ResNet-18.

Only the layers you select become plastic.  Here: every 3x3 convolution of the last residual stage
(``layer4``) -- chosen with a ``(name, module) -> bool`` predicate -- while the stem, the other stages, the
1x1 down-sampling convolution, BatchNorm and the classifier keep their ordinary back-propagated gradients.

After ``loss.backward()``, ``rule.step()`` overwrites ``weight.grad`` of each selected layer with
``sign(dL/dW) * |E|`` (GHL Eq. 6, ``E`` the SWTA-Oja eligibility of Eq. 4); any ``torch.optim`` optimiser then
applies it.  The script checks exactly that: selected gradients were rewritten, all others are untouched.

Data: random 32x32 images whose label is encoded in a colour bias (synthetic, made here; no download).

    python examples/01_resnet18_plugin.py [--steps 3] [--batch-size 8]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ghl_snn import GHL, normalize_eligibility


def synthetic_batch(batch_size: int, num_classes: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 3x32x32 images plus a class-dependent mean colour (a learnable, clearly synthetic task)."""
    labels = torch.randint(num_classes, (batch_size,), generator=generator)
    palette = torch.linspace(-1.0, 1.0, num_classes)
    images = torch.randn(batch_size, 3, 32, 32, generator=generator)
    images[:, 0] += palette[labels][:, None, None]
    return images, labels


def is_plastic(name: str, module: nn.Module) -> bool:
    """Select the 3x3 convolutions of ``layer4`` (the down-sampling 1x1 convolution stays on backprop)."""
    return name.startswith("layer4.") and isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    model = torchvision.models.resnet18(weights=None, num_classes=4)   # a foreign model, untouched
    rule = GHL(model, tau=1.0, layers=is_plastic)
    print(f"plastic layers ({len(rule.layers)}): {list(rule.layers)}")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    plastic = {id(p) for p in rule.parameters()}
    losses: list[float] = []
    for step in range(args.steps):
        images, labels = synthetic_batch(args.batch_size, 4, generator)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        backprop = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        # the SWTA-Oja eligibility of each plastic layer, max-normalised as rule.step() will use it
        eligibility = {f"{layer}.weight": normalize_eligibility(rule.eligibility(layer), "max")
                       for layer in rule.layers}
        rule.step()                                      # weight.grad <- sign(dL/dW) * |E| on layer4 3x3 convs
        for name, param in model.named_parameters():
            if id(param) in plastic:
                expected = backprop[name].sign() * eligibility[name].abs()
                assert not torch.equal(param.grad, backprop[name]), f"{name}: gradient was not rewritten"
                assert torch.allclose(param.grad, expected), f"{name}: grad is not sign(dL/dW) * |E|"
                assert float(param.grad.abs().max()) <= 1.0 + 1e-6, f"{name}: |E| is max-normalised to <= 1"
            else:
                assert torch.equal(param.grad, backprop[name]), f"{name}: non-selected gradient was modified"
        optimizer.step()
        losses.append(loss.item())
        print(f"step {step + 1}: loss {loss.item():.4f}")
    rule.remove()                                        # the model is plain torchvision again
    rewritten = sorted(n for n, p in model.named_parameters() if id(p) in plastic)
    print(f"OK: {len(rewritten)} selected weights rewritten, "
          f"{sum(1 for _ in model.parameters()) - len(rewritten)} other parameters kept their backprop gradient")
    return {"losses": losses, "rewritten": rewritten}


if __name__ == "__main__":
    main()
