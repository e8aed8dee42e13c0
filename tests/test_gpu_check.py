"""The one-command GPU check runs in its tiny CPU form, prints every section's rows and columns; the data stream
keeps batches on the device and yields exactly the per-batch reference batches."""
import json
import sys
from pathlib import Path

import pytest
import torch

from ghl_snn.datasets.cifar import BatchStream, ImageData, normalize_images, random_crop_flip

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_check  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread is faster


def test_tiny_check_prints_every_row_and_column(tmp_path, capsys):
    out = tmp_path / "check.json"
    rows = gpu_check.main(["--tiny", "--device", "cpu", "--skip", "spiking", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "| check | setting | variant | step ms | ratio | data ms | data % | epoch s | 100 epochs |" in printed
    assert all(list(r) == list(gpu_check.COLUMNS) for r in rows)
    steps = [r for r in rows if r["check"] == "step"]
    assert [r["variant"] for r in steps] == list(gpu_check.STEP_VARIANTS) * 2
    assert {r["setting"].split()[3] for r in steps} == {"fp32", "bf16"}
    assert all(r["ratio"] == "1.00" for r in steps if r["variant"] == "bp")
    assert all(float(r["step ms"]) > 0 and float(r["ratio"]) > 0 for r in steps)
    epochs = [r for r in rows if r["check"] == "epoch"]
    assert [r["variant"] for r in epochs] == ["ghl", "bp"]
    for r in epochs:
        assert 0 <= float(r["data %"]) <= 100 and float(r["data ms"]) >= 0
        hours = float(r["100 epochs"].removesuffix(" h"))
        assert hours == pytest.approx(100 * float(r["epoch s"]) / 3600, abs=0.01)
    spiking = [r for r in rows if r["check"] == "spiking-step"]
    assert [r["variant"] for r in spiking] == ["plain loop", "SpikingNetwork.run, eager",
                                               "ThreeFactor FeedbackSign run + step"]
    assert spiking[0]["ratio"] == "1.00" and all(float(r["step ms"]) > 0 for r in spiking)
    assert spiking[-1]["note"] == "host reads per window: 1"  # run + step of the learning window
    assert json.loads(out.read_text())["rows"] == rows


def test_spiking_section_folds_the_scripts_table_and_survives_its_absence(tmp_path):
    fake = tmp_path / "fake_spiking.py"
    fake.write_text("import sys\nprint('header line')\nprint('| method | T | ms |')\nprint('|---|---|---|')\n"
                    "print('| online | 10 | 3.5 |')\nprint('| bptt | 10 | 7.0 |')\nprint('ratio line')\n")
    rows = gpu_check.spiking_rows(torch.device("cpu"), tiny=True, script=fake)
    assert [r["variant"] for r in rows] == ["online", "bptt"]
    assert rows[0]["note"] == "T 10; ms 3.5"
    missing = gpu_check.spiking_rows(torch.device("cpu"), tiny=True, script=tmp_path / "absent.py")
    assert len(missing) == 1 and "not found" in missing[0]["note"]
    broken = tmp_path / "broken.py"
    broken.write_text("raise SystemExit('no such option')\n")
    failed = gpu_check.spiking_rows(torch.device("cpu"), tiny=True, script=broken)
    assert len(failed) == 1 and "exit 1" in failed[0]["note"]


@pytest.mark.parametrize("augment,drop_last", [(False, False), (True, False), (True, True)])
def test_batch_stream_matches_the_per_batch_reference(augment, drop_last):
    """Device-resident stream == gather, augment and normalise batch by batch with the same generator."""
    images = torch.randint(0, 256, (23, 3, 8, 8), dtype=torch.uint8)
    data = ImageData(images, torch.arange(23) % 10, [str(i) for i in range(10)])
    stream = BatchStream(data, 5, torch.device("cpu"), shuffle=True, augment=augment, seed=3, drop_last=drop_last)
    got = list(stream.epoch(2))
    generator = torch.Generator().manual_seed(3 * 100_003 + 2)
    order = torch.randperm(23, generator=generator)
    expected = []
    for start in range(0, 23, 5):
        index = order[start:start + 5]
        if drop_last and len(index) < 5:
            break
        batch = random_crop_flip(images[index], generator) if augment else images[index]
        expected.append((normalize_images(batch), data.labels[index]))
    assert len(got) == len(expected) == len(stream)
    for (got_x, got_y), (want_x, want_y) in zip(got, expected):
        assert torch.equal(got_x, want_x) and torch.equal(got_y, want_y)
