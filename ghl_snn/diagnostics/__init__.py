"""Why a plasticity rule works: Hebbian alignment of updates, competition (Gini, dead neurons), step sizes,
agreement of the update with the gradient, linear probes."""
from .alignment import ALIGNMENT_COLUMNS, AlignmentMonitor, hebbian_update
from .gradient_agreement import gradient_agreement
from .competition import COMPETITION_COLUMNS, CompetitionMonitor, dead_fraction, dead_neurons, gini, init_similarity
from .monitors import MONITORS, make_monitors, parse_monitor_spec, write_monitors
from .stepsize import StepSizeMonitor
from .probes import ProbeResult, extract_features, linear_probe, probe_against_random_init, random_init_copy

__all__ = [
    "AlignmentMonitor", "hebbian_update", "ALIGNMENT_COLUMNS",
    "CompetitionMonitor", "gini", "init_similarity", "dead_neurons", "dead_fraction", "COMPETITION_COLUMNS",
    "StepSizeMonitor", "gradient_agreement", "MONITORS", "make_monitors", "parse_monitor_spec", "write_monitors",
    "ProbeResult", "extract_features", "linear_probe", "probe_against_random_init", "random_init_copy",
]
