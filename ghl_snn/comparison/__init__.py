"""The comparison harness: what every experiment shares, usable on its own to compare a rule or modulator fairly.

* [`ghl_snn.comparison.methods`][]: the method registry (a method's name -> its modulator, the layers that learn and
  the learner);
* [`ghl_snn.comparison.cli`][] and [`ghl_snn.comparison.guard`][]: the command-line grammar every experiment shares
  and its guarded, one-line errors;
* [`ghl_snn.comparison.runner`][]: the training loop (checkpoints, ``--resume``, divergence, split-named scores);
* [`ghl_snn.comparison.engine`][] and [`ghl_snn.comparison.stats`][]: learning-rate grids extended past their
  edges, selection on validation over seeds, paired 95 % intervals, one results table and plot;
* [`ghl_snn.comparison.common`][], [`ghl_snn.comparison.processes`][], [`ghl_snn.comparison.distributed`][]:
  seeding, devices, atomic files, child processes and multi-GPU set-up.
"""
