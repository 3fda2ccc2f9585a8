"""The BIDS-derivatives export of a run (``export: bids``): what other tools read.

:func:`bids_files` lists the files of ``<run folder>/bids/``, named as nilearn's
``save_glm_to_bids`` names a second-level model's (the BIDS Stats Models convention,
``contrast-<label>_stat-<stat>_statmap.nii.gz`` in ``group/``)::

    bids/dataset_description.json          BIDSVersion, DatasetType derivative, GeneratedBy
    bids/group/statmap.json                the model: design, contrast, software, parameters
    bids/group/design.tsv                  the design matrix (participant_id first)
    bids/group/mask.nii.gz                 the analysis mask
    bids/group/contrast-<label>_stat-<effect|variance|t|z|p>_statmap.nii.gz
    bids/group/contrast-<label>_stat-<...>_statmap.json   its sidecar
    bids/group/contrast-<label>_clusters.tsv (+ .json)    the cluster table and its threshold

Each map sidecar names what the map holds, the design, the contrast (name, weights,
columns, test, tail), the software versions and the run's parameters. The writer,
:func:`glmkit.report.runfolder.write_run_folder`, writes the tree into a temporary folder
renamed when complete and lists every file in the run's manifest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EXPORT_DIR", "BIDS_VERSION", "bids_label", "bids_files"]

#: the export's folder in the run folder
EXPORT_DIR = "bids"
BIDS_VERSION = "1.9.0"
_GROUP = "group"
_WORDS = {"-": " Minus ", "+": " Plus ", ">": " Gt ", "<": " Lt ", "_": " "}
_DESCRIPTIONS = {
    "effect": "contrast estimate c @ beta (0 outside the mask)",
    "variance": "variance of the contrast estimate (0 outside the mask)",
    "t": "t statistic of the contrast (0 outside the mask)",
    "F": "F statistic of the contrast (0 outside the mask)",
    "z": "z score of the one-sided (upper-tail) p-value (0 outside the mask)",
    "p": "uncorrected one-sided (upper-tail) p-value; 1 outside the mask",
}


def bids_label(name: str) -> str:
    """A contrast name as a BIDS entity label, as nilearn's ``save_glm_to_bids`` makes it:
    ``-``/``+``/``>``/``<`` become words, ``_`` a space, then camelCase, letters and digits
    only (``"score - age"`` -> ``"scoreMinusAge"``, ``"[1, 0]"`` -> ``"10"``).

    Examples
    --------
    >>> bids_label("fluency"), bids_label("score - age"), bids_label("2*a_b")
    ('fluency', 'scoreMinusAge', '2aB')
    """
    text = name
    for char, word in _WORDS.items():
        text = text.replace(char, word)
    words = text.split(" ")
    words = [words[0].lower()] + [w.title() for w in words[1:]]
    label = "".join(ch for ch in " ".join(words) if ch.isalnum())
    return label or "contrast"


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=_plain) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _text(content: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(content, encoding="utf-8")


def _image(img: Any) -> Callable[[Path], None]:
    import nibabel as nib

    return lambda path: nib.save(img, path)


def _model(result, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """What every sidecar says about the model: design, contrast, software, parameters."""
    contrast, design, settings = result.contrast, result.design, result.settings
    weights = np.asarray(contrast.contrast, dtype=float)
    return {
        "Design": {
            "Columns": [str(c) for c in design.columns],
            "File": "design.tsv",
            "NumberOfSubjects": int(len(design.matrix)),
            "Covariates": None if settings.formula else list(settings.covariates or ()),
            "Formula": settings.formula,
            "Rename": dict(settings.rename or {}),
            "Centered": bool(settings.center),
        },
        "Contrast": {
            "Name": str(contrast.name),
            "Label": bids_label(str(contrast.name)),
            "Test": contrast.stat_type,
            "Weights": weights.tolist(),
            "ConditionList": [str(c) for c in design.columns],
            "DegreesOfFreedom": int(contrast.dof),
            "Tail": "p and z are one-sided (upper tail)",
        },
        "Model": {
            "Type": "mass-univariate ordinary least squares (second level)",
            "SmoothingFWHM": settings.smoothing_fwhm,
            "Mask": "mask.nii.gz",
            "Dataset": str(result.dataset.name),
        },
        "Software": dict(provenance.get("software", {})),
        "Parameters": settings.to_dict(runner=False),
    }


def _design_tsv(result) -> str:
    frame = result.design.matrix.copy()
    frame.insert(0, "participant_id", [str(s) for s in frame.index])
    return frame.to_csv(sep="\t", index=False)


def _clusters(result, label: str) -> dict[str, Callable[[Path], None]]:
    settings = result.settings
    method = settings.height_control or "fdr"
    threshold = result.thresholds.get(method, result.thresholds["fdr"])
    details = {"Statistic": "z", "HeightControl": method, "Alpha": settings.alpha,
               "Threshold": float(threshold.threshold), "TwoSided": bool(settings.two_sided),
               "Description": "clusters of the z map above the threshold of the run's "
                              "parametric height control (report.html, clusters.csv)"}
    stem = f"{_GROUP}/contrast-{label}_clusters"
    table = result.clusters if result.clusters is not None else None
    tsv = table.to_csv(sep="\t", index=False, na_rep="n/a") if table is not None else ""
    return {f"{stem}.tsv": _text(tsv), f"{stem}.json": _text(_dump(details))}


def bids_files(result, images: Mapping[str, Any], provenance: Mapping[str, Any]
               ) -> dict[str, Callable[[Path], None]]:
    """The files of the export: path relative to ``bids/`` -> a function writing it.

    Parameters
    ----------
    result : glmkit.pipeline.AnalysisResult
    images : mapping
        ``result.maps()`` (their headers: float32, intent, the input's space).
    provenance : mapping
        ``result.provenance()`` (software versions).
    """
    from glmkit import __version__

    contrast = result.contrast
    label = bids_label(str(contrast.name))
    model = _model(result, provenance)
    generated = {"Name": "glmkit", "Version": __version__,
                 "Description": "second-level (group) GLM: glmkit run"}
    files: dict[str, Callable[[Path], None]] = {
        "dataset_description.json": _text(_dump({
            "Name": f"glmkit run {result.settings.run_name}", "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative", "GeneratedBy": [generated]})),
        f"{_GROUP}/statmap.json": _text(_dump({
            "Description": "A second-level model fitted by glmkit.", **model})),
        f"{_GROUP}/design.tsv": _text(_design_tsv(result)),
        f"{_GROUP}/mask.nii.gz": _image(images["mask"]),
    }
    for stat in ("effect", "variance", contrast.stat_type, "z", "p"):
        stem = f"{_GROUP}/contrast-{label}_stat-{stat}_statmap"
        files[f"{stem}.nii.gz"] = _image(images[stat])
        files[f"{stem}.json"] = _text(_dump({
            "Description": _DESCRIPTIONS[stat], "Statistic": stat, **model}))
    files.update(_clusters(result, label))
    return files
