"""The ``Examples:`` sections of the public classes run as written (doctest) and print what they show."""
from __future__ import annotations

import doctest
import importlib

import pytest
import torch

EXAMPLES = ["ghl_snn.plasticity.GHL", "ghl_snn.learners.hebbff.HebbFF", "ghl_snn.spiking.learner.ThreeFactor",
            "ghl_snn.modulators.grad_sign.GradSign", "ghl_snn.modulators.ablations.SignOnly",
            "ghl_snn.modulators.ablations.Ones", "ghl_snn.modulators.ablations.PlainGradient",
            "ghl_snn.modulators.ablations.UnitMagnitude", "ghl_snn.modulators.ablations.PlainReadout",
            "ghl_snn.modulators.neuron_sign.NeuronSign",
            "ghl_snn.modulators.feedback_sign.FeedbackSign", "ghl_snn.modulators.feedback_sign.FeedbackAlignment",
            "ghl_snn.modulators.attention_gated.AttentionGatedReward", "ghl_snn.modulators.reward_sign.RewardSign",
            "ghl_snn.modulators.scalar_reward.ScalarReward", "ghl_snn.comparison.engine.compare"]


@pytest.mark.parametrize("qualified", EXAMPLES)
def test_examples_section_runs_as_written(qualified: str) -> None:
    module_name, name = qualified.rsplit(".", 1)
    target = getattr(importlib.import_module(module_name), name)
    assert "Examples:" in (target.__doc__ or ""), f"{qualified} has no Examples section"
    torch.manual_seed(0)
    finder = doctest.DocTestFinder(recurse=False)
    tests = finder.find(target, qualified, globs={})
    assert tests and tests[0].examples, f"{qualified}: no runnable example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{qualified}: {result.failed} of {result.attempted} example lines failed"
