"""One run of one method of the row-wise MNIST experiment at one learning rate and seed 0, printing the validation
accuracy per epoch (the architecture probes of probes.md).  From the root of a clone, with ``GHL_SNN_DATA`` set:

    python experiments/recurrent-mnist/probe.py METHOD LR [options of python -m ghl_snn.experiments.recurrent]
"""
from __future__ import annotations

import sys
import time

from ghl_snn.experiments import recurrent


def main(argv: list[str]) -> None:
    method, lr = argv[0], float(argv[1])
    args = recurrent.parse_args(argv[2:])
    data = recurrent.load_data(args)
    if not callable(data):
        data = {name: split for name, split in data.items() if name != "test"}  # validation only
    began = time.time()
    record = recurrent.make_run(args, data)(method, {"lr": lr}, 0)
    print(method, lr, " ".join(argv[2:]), "val", [round(100 * row["val_acc"], 1) for row in record["history"]],
          f"{1000 * record['seconds_per_batch']:.1f} ms / batch", f"{time.time() - began:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
