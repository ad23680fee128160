"""Precision and recall of generated vs reference features (Kynkaanniemi et al.), by torch-fidelity's
`prc_features_to_metric`: a sample is covered when it lies inside the k-th nearest-neighbour ball (k = 3) of
some sample of the other set. Precision: generated samples covered by the reference manifold; recall: the
converse.

Convention: set A is the generated set, set B the reference (torch-fidelity's input1 / input2). torch-fidelity
uses VGG16 features for PRC by default; we use the Inception pool features of the FID run, and say so.
"""

from __future__ import annotations

import numpy as np
import torch

from mars_eval.errors import MarsEvalError

NEIGHBORHOOD = 3


def precision_recall(x_gen: np.ndarray, x_ref: np.ndarray, neighborhood: int = NEIGHBORHOOD) -> dict:
    from torch_fidelity.metric_prc import (
        KEY_METRIC_F_SCORE,
        KEY_METRIC_PRECISION,
        KEY_METRIC_RECALL,
        prc_features_to_metric,
    )

    if min(len(x_gen), len(x_ref)) <= neighborhood:
        raise MarsEvalError(f"precision/recall needs more than {neighborhood} images per set "
                            f"(got {len(x_gen)} and {len(x_ref)})")
    out = prc_features_to_metric(torch.from_numpy(np.ascontiguousarray(x_gen, dtype=np.float32)),
                                 torch.from_numpy(np.ascontiguousarray(x_ref, dtype=np.float32)),
                                 prc_neighborhood=neighborhood, save_cpu_ram=True, verbose=False)
    return {"precision": out[KEY_METRIC_PRECISION], "recall": out[KEY_METRIC_RECALL],
            "f_score": out[KEY_METRIC_F_SCORE], "prc_neighborhood": neighborhood, "prc_features": "inception-2048"}
