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
    ResourceError,
    RunError,
    RunLockedError,
)

# public name -> module that defines it
_LAZY = {
    # datasets
    "Dataset": "glmkit.data.datasets",
    "load_demo": "glmkit.data.datasets",
    "load_localizer": "glmkit.data.datasets",
    "load_folder": "glmkit.data.datasets",
    "load_bids": "glmkit.data.datasets",
    "load_dataset": "glmkit.data.datasets",
    # quality control
    "QCPolicy": "glmkit.data.qc",
    "QCResult": "glmkit.data.qc",
    "run_qc": "glmkit.data.qc",
    # design
    "Design": "glmkit.stats.design",
    "make_design": "glmkit.stats.design",
    # glm
    "SecondLevelResult": "glmkit.stats.glm",
    "ContrastResult": "glmkit.stats.glm",
    "fit_second_level": "glmkit.stats.glm",
    "ols_fit": "glmkit.stats.glm",
    "OLSFit": "glmkit.stats.glm",
    "contrast_vector": "glmkit.stats.glm",
    # thresholds
    "ThresholdResult": "glmkit.stats.threshold",
    "threshold_map": "glmkit.stats.threshold",
    "cluster_table": "glmkit.stats.threshold",
    "bonferroni_logp": "glmkit.stats.threshold",
    "fdr_threshold": "glmkit.stats.threshold",
    # permutation
    "PermutationResult": "glmkit.stats.permutation",
    "permutation_test": "glmkit.stats.permutation",
    # runs
    "RunSettings": "glmkit.settings",
    "AnalysisResult": "glmkit.pipeline",
    "run_analysis": "glmkit.pipeline",
    "run_notebook": "glmkit.run",
    "run_batch": "glmkit.run",
    "check_run_folder": "glmkit.run",
    # report and exploration
    "write_report": "glmkit.report.page",
    "RunManifest": "glmkit.report.runfolder",
    "recovery": "glmkit.report.page",
    "viewer_html": "glmkit.report.viewer",
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
    "RunLockedError",
    "ReportError",
    "ResourceError",
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
    from glmkit.data.datasets import (
        Dataset,
        load_bids,
        load_dataset,
        load_demo,
        load_folder,
        load_localizer,
    )
    from glmkit.stats.design import Design, make_design
    from glmkit.stats.glm import (
        ContrastResult,
        OLSFit,
        SecondLevelResult,
        contrast_vector,
        fit_second_level,
        ols_fit,
    )
    from glmkit.stats.permutation import PermutationResult, permutation_test
    from glmkit.pipeline import AnalysisResult, run_analysis
    from glmkit.data.qc import QCPolicy, QCResult, run_qc
    from glmkit.report import recovery, write_report
    from glmkit.report.runfolder import RunManifest
    from glmkit.run import check_run_folder, run_batch, run_notebook
    from glmkit.settings import RunSettings
    from glmkit.stats.threshold import (
        ThresholdResult,
        bonferroni_logp,
        cluster_table,
        fdr_threshold,
        threshold_map,
    )
    from glmkit.report.viewer import viewer_html
    from glmkit.widgets import explore
