"""The comparison harness: what every experiment shares, usable on its own to compare a rule or modulator fairly.

* [`ghl_snn.comparison.engine`][] and [`ghl_snn.comparison.stats`][]: learning-rate grids extended past their
  edges, selection on validation over seeds, paired 95 % intervals, one results table and plot
  ([`compare`][ghl_snn.comparison.engine.compare] with one ``run(method, hparams, seed)`` callback);
  [`ghl_snn.comparison.merge`][]: one comparison run in parts (a process or machine per method) gathered into one;
* [`ghl_snn.comparison.methods`][]: the method registry (a method's name -> its modulator, the layers that learn and
  the learner);
* [`ghl_snn.comparison.runner`][]: the training loop (checkpoints, ``--resume``, divergence, split-named scores);
  [`ghl_snn.comparison.spiking`][]: the same loop for spiking networks (a ThreeFactor window or BPTT per batch);
  [`ghl_snn.comparison.goodness`][]: for goodness learners (Forward-Forward, HebbFF);
* [`ghl_snn.comparison.cli`][] and [`ghl_snn.comparison.guard`][]: the command-line grammar every experiment shares
  and its guarded, one-line errors;
* [`ghl_snn.comparison.common`][], [`ghl_snn.comparison.processes`][], [`ghl_snn.comparison.distributed`][]:
  seeding, devices, atomic files, child processes and multi-GPU set-up.
"""
from .common import PeakMemory, markdown_table, seed_everything, select_device, write_json
from .engine import Method, Param, Run, check_record, compare, results_table, tune
from .methods import MethodSpec, build_learner, build_modulator, method_names
from .runner import RunExists, Trainer, TrainingDiverged, evaluate_splits, fit, shuffled_batches, trial_history
from .spiking import SpikingTrainer, spike_scores
from .goodness import GoodnessTrainer
from .stats import paired_interval

__all__ = [
    # fair comparison
    "Method", "Param", "Run", "compare", "tune", "check_record", "results_table", "paired_interval",
    # the method registry
    "MethodSpec", "build_learner", "build_modulator", "method_names",
    # the training loop
    "Trainer", "fit", "trial_history", "evaluate_splits", "RunExists", "TrainingDiverged", "shuffled_batches",
    "SpikingTrainer", "spike_scores", "GoodnessTrainer",
    # utilities
    "seed_everything", "select_device", "PeakMemory", "markdown_table", "write_json",
]
