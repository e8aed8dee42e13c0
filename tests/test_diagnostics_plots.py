"""The diagnostics' figures: receptive fields and the Gini traces are written as PNG files; bad input fails clearly."""
import pytest
import torch
from PIL import Image

from ghl_snn.diagnostics.plots import plot_gini, receptive_fields


def test_receptive_fields_writes_a_palette_png(tmp_path):
    path = tmp_path / "fields.png"
    receptive_fields({"a": torch.randn(10, 784), "b": torch.randn(10, 784)}, path, 10, "fields")
    with Image.open(path) as image:
        assert image.mode == "P" and len(image.getcolors(256)) <= 48  # re-saved with the adaptive palette
    with pytest.raises(ValueError, match="count must be >= 1"):
        receptive_fields({"a": torch.randn(4, 784)}, path, 0, "none")


@pytest.mark.parametrize("widths", [(8,), (8, 16)])
def test_plot_gini_one_panel_per_width(tmp_path, widths):
    traces = {(w, m): [(0, 0.1), (10, 0.4)] for w in widths for m in ("ghl", "swta")}
    plot_gini(traces, tmp_path / "gini.png")
    with Image.open(tmp_path / "gini.png") as image:
        assert image.size[0] > 0
