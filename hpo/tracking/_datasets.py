"""The data of a study as MLflow datasets: what the UI's Datasets column shows for every run.

One metadata-only dataset per class split (the images stay where they are): named
``<dataset>/<split>/<part>`` (``omniglot/vinyals/train``), its source the data root (redacted), its digest
:attr:`learners.data.ImageSplit.digest` of the class list and the decoded images, so runs on other data are
told apart, and a profile with the counts. Trial runs use ``train`` and ``validation``, final-test runs
``test``, and parent runs all three.
"""
from __future__ import annotations

import json

from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from hpo.redaction import redact
from learners.data import DatasetSplits

CONTEXTS = {"train": "train", "val": "validation", "test": "test"}  # class split → MLflow's input context


def dataset_inputs(data: DatasetSplits, root: str | None) -> dict[str, DatasetInput]:
    """The MLflow input of each class split (``train``, ``val``, ``test``) of ``data``, loaded from ``root``."""
    if root is None:  # generated data
        source_type, source = "code", {"tags": {"generator": f"learners.data ({data.dataset})"}}
    else:
        source_type, source = "local", {"uri": redact(str(root))}
    inputs = {}
    for part, context in CONTEXTS.items():
        split = data[part]
        profile = {"classes": split.num_classes, "images": len(split.images), "image_shape": list(split.image_shape)}
        dataset = Dataset(name=f"{data.dataset}/{data.split}/{part}", digest=split.digest, source_type=source_type,
                          source=json.dumps(source), profile=json.dumps(profile))
        inputs[part] = DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
    return inputs
