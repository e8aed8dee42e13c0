"""The GHL plug-in: three-factor plasticity for the Linear, ConvNd and attention layers of any ``nn.Module``.

After ``loss.backward()``, [`GHL.step`][ghl_snn.plasticity.GHL.step] overwrites each plastic weight's ``.grad`` with
``M ⊙ |E|`` (GHL paper Eq. 5-6, Algorithm 1): ``E`` the local eligibility computed from the ``(x, y)`` captured by
forward hooks (default SWTA-Oja, Eq. 4), ``M`` the broadcast sign of a [`Modulator`][ghl_snn.Modulator] (default
[`GradSign`][ghl_snn.GradSign]).  Any ``torch.optim`` optimiser then applies ``W <- W - eta * grad`` with its own
learning rates, schedules, weight decay and parameter groups; parameters that are not selected (classifier, BatchNorm,
biases) keep their back-propagated gradients.

The eligibility is computed inside each plastic layer's forward hook (float32, autocast off) and accumulated until
``step()``, so the layer output is not retained and in-place operations after the layer cannot corrupt ``E``.  A
Linear layer's ``E`` is written into a float32 buffer kept across steps (freed by
[`GHL.remove`][ghl_snn.plasticity.GHL.remove]; on CPU its rows are padded when their length is a multiple of 128,
or of 1024 from 8192 values on).  On CPU, where the rule has the form ``E = U^T x - F W``
(``EligibilityRule.linear_factors``; SWTA-Oja) and the step writes in place (GradSign, SignOnly; ``"max"`` or no
normalisation), a Linear layer keeps the factors ``U``, ``x`` and ``F`` instead while they are smaller than its
weight, and ``step()`` forms ``E`` one cache-sized row block at a time, using each block while it is in cache.

Plastic layer kinds: ``nn.Linear``; ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` with any ``groups`` (grouped and
depthwise: the SWTA softmax of Eq. 4 runs over the output channels of each group), padding and padding mode;
``nn.MultiheadAttention`` and torchvision's Swin window attention, whose query / key / value input projections
(packed or separate) and output projection are plastic synapses, each with its own softmax over its output units.
The projections are recorded where the attention layer calls them (``F.linear`` inside its forward), since their
sub-modules' hooks never run.

No silent failure: [`GHL.step`][ghl_snn.plasticity.GHL.step] warns (``strict=True``: raises) about every selected
layer that recorded nothing, raises ``FloatingPointError`` instead of writing a non-finite update
(``nonfinite="skip"``: warns and leaves that weight without a gradient for this step), and never writes into a
weight with ``requires_grad=False`` (the shared [`UpdateGuard`][ghl_snn.guards.UpdateGuard]).

Usage::

    rule = GHL(model, tau=1.0)
    loss.backward(); rule.step(); optimizer.step()

Mixed precision (``torch.amp``): ``E`` is always accumulated in float32.  With a ``GradScaler`` call
``scaler.scale(loss).backward(); scaler.unscale_(optimizer); rule.step(); scaler.step(optimizer);
scaler.update()`` -- unscale *before* ``rule.step()``, otherwise ``scaler.step`` would divide the Hebbian update
by the loss scale.  Distributed data parallel: when ``torch.distributed`` is initialised with more than one
process, ``E`` is all-reduced (averaged) *before* normalisation (and a per-neuron modulator's credit before its sign),
so every replica applies the identical update.

The package, one concern per module: ``base`` (the skeleton every learner shares,
[`Learner`][ghl_snn.plasticity.base.Learner]), ``_ghl`` (the class: hooks, ``step()``, state), ``_capture``
(what a forward keeps for the modulator), ``_attention`` (recording the projections of attention layers) and
``_fast_path`` (buffers, low-rank factors and the blocked in-place write, chosen by the modulator's exact type; the
values are those of the generic path).
"""
from ._ghl import GHL

__all__ = ["GHL"]
