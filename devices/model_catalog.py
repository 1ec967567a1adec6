"""Model descriptions for the registry, counted from the torch models fedsim trains.

Every architecture in ``fedsim.core.models`` bound to every classification dataset (which fixes
the input shape, the classes and the sensors) is measured with ``devices.footprint``: parameters,
MACs, RAM and flash for inference, RAM for training all layers or only the head.
``fedsim registry catalog-models`` rewrites ``ontology/catalog/models.ttl`` from them; a test
checks that the committed file is what the models give today.
"""

from __future__ import annotations

from pathlib import Path

from devices.cost import head_sram_bytes
from devices.footprint import footprint, head_parameters
from fedsim.core.data import DATASETS, dataset_source, load_task_data
from fedsim.core.models import MODELS, build_model
from fedsim.core.profiles import ModelFigures
from ontology.models import MODELS_FILE, write_models

__all__ = ["TRAIN_BATCH", "all_model_figures", "model_figures", "write_model_catalog"]

TRAIN_BATCH = 16  # the scenario default (algorithm.batch_size)


def model_figures(architecture: str, dataset: str, batch: int = TRAIN_BATCH) -> ModelFigures:
    data = load_task_data(dataset, 0)
    model = build_model(architecture, data.num_features, data.num_outputs, 0)
    full = footprint(model, data.sample_shape, batch)
    head = footprint(model, data.sample_shape, batch, head_parameters(model))
    return ModelFigures(
        architecture=architecture,
        dataset=dataset,
        input_shape=tuple(data.sample_shape),
        num_classes=data.num_classes,
        sensors=dataset_source(dataset).sensors,
        parameters=sum(p.numel() for p in model.parameters()),
        forward_macs=full.forward_macs,
        train_macs=full.train_macs,
        inference_ram_bytes=full.inference_bytes - full.weight_bytes,
        inference_flash_bytes=full.weight_bytes,
        train_ram_bytes=full.train_bytes,
        head_train_ram_bytes=head_sram_bytes(head),
        train_batch_size=batch,
    )


def all_model_figures() -> list[ModelFigures]:
    """Every architecture on every classification dataset whose input it takes, in name order
    (an architecture refuses an input it cannot take with a ``ValueError``: conv4 on 8×8 digits)."""
    figures = []
    for dataset in DATASETS.names():
        if dataset_source(dataset).task != "classification":
            continue
        for architecture in MODELS.names():
            try:
                figures.append(model_figures(architecture, dataset))
            except ValueError:
                continue
    return figures


def write_model_catalog(path: Path = MODELS_FILE) -> Path:
    return write_models(all_model_figures(), path)
