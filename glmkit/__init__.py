"""glmkit: second-level (group) fMRI statistics, Jupyter-native and reproducible.

Public names are imported lazily so that ``glmkit --help`` starts fast and one
module's heavy dependencies are paid only when used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from glmkit._version import __version__
from glmkit.errors import (
    ContrastError,
    DataFileNotFoundError,
    DatasetError,
    DesignError,
    GlmkitError,
    ImageError,
    ParameterError,
    QCError,
    ReportError,
    RunError,
)

# public name -> module that defines it
_LAZY = {
    # datasets
    "Dataset": "glmkit.datasets",
    "load_demo": "glmkit.datasets",
    "load_localizer": "glmkit.datasets",
    "load_folder": "glmkit.datasets",
    "load_dataset": "glmkit.datasets",
    # quality control
    "QCPolicy": "glmkit.qc",
    "QCResult": "glmkit.qc",
    "run_qc": "glmkit.qc",
    # design
    "Design": "glmkit.design",
    "make_design": "glmkit.design",
    # glm
    "SecondLevelResult": "glmkit.glm",
    "ContrastResult": "glmkit.glm",
    "fit_second_level": "glmkit.glm",
    "ols_fit": "glmkit.glm",
    "OLSFit": "glmkit.glm",
    "contrast_vector": "glmkit.glm",
    # thresholds
    "ThresholdResult": "glmkit.threshold",
    "threshold_map": "glmkit.threshold",
    "cluster_table": "glmkit.threshold",
    "bonferroni_logp": "glmkit.threshold",
    "fdr_threshold": "glmkit.threshold",
    # permutation
    "PermutationResult": "glmkit.permutation",
    "permutation_test": "glmkit.permutation",
    # runs
    "RunSettings": "glmkit.settings",
    "AnalysisResult": "glmkit.pipeline",
    "run_analysis": "glmkit.pipeline",
    "run_notebook": "glmkit.run",
    "run_batch": "glmkit.run",
    # report and exploration
    "write_report": "glmkit.report",
    "recovery": "glmkit.report",
    "viewer_html": "glmkit.viewer",
    "explore": "glmkit.widgets",
}

__all__ = [
    "__version__",
    "GlmkitError",
    "ParameterError",
    "DataFileNotFoundError",
    "ImageError",
    "DatasetError",
    "QCError",
    "DesignError",
    "ContrastError",
    "RunError",
    "ReportError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'glmkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from glmkit.datasets import Dataset, load_dataset, load_demo, load_folder, load_localizer
    from glmkit.design import Design, make_design
    from glmkit.glm import (
        ContrastResult,
        OLSFit,
        SecondLevelResult,
        contrast_vector,
        fit_second_level,
        ols_fit,
    )
    from glmkit.permutation import PermutationResult, permutation_test
    from glmkit.pipeline import AnalysisResult, run_analysis
    from glmkit.qc import QCPolicy, QCResult, run_qc
    from glmkit.report import recovery, write_report
    from glmkit.run import run_batch, run_notebook
    from glmkit.settings import RunSettings
    from glmkit.threshold import (
        ThresholdResult,
        bonferroni_logp,
        cluster_table,
        fdr_threshold,
        threshold_map,
    )
    from glmkit.viewer import viewer_html
    from glmkit.widgets import explore
