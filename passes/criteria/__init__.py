"""Saliency criteria: which weights to keep. A registry every pruning path reads (see base.py for the contract).

    magnitude  |w|                               Han et al. 2015 (default, no data)
    wanda      |W_ij|·‖X_j‖₂ per output row       Sun et al. 2024 (onnxruntime on calibration data)
    obd        ½·h_kk·w_k², h = empirical Fisher  LeCun et al. 1989 (gradients through the torch bridge)
    taylor     mean_b |w·∂L_b/∂w|                 Molchanov et al. 2017 (gradients through the torch bridge)
"""

from onnxprune.passes.criteria import magnitude, obd, taylor, wanda  # noqa: F401  (registers them)
from onnxprune.passes.criteria.base import (CRITERIA, DEFAULT, Criterion, MissingStatistics, ScoreContext, Statistics,
                                            check_criterion, get_criterion, register_criterion, score)
from onnxprune.passes.criteria.rank import keep_mask, smallest
from onnxprune.passes.criteria.scorer import MAGNITUDE, Scorer, Scoring

__all__ = ["CRITERIA", "DEFAULT", "MAGNITUDE", "Criterion", "MissingStatistics", "ScoreContext", "Scorer", "Scoring",
           "Statistics", "check_criterion", "get_criterion", "keep_mask", "register_criterion", "score", "smallest"]
