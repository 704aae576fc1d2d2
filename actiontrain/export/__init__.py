"""OpenVINO exports: conversion with a parity check, a checksummed manifest, INT8 quantization, verified pulls.

Modules: :mod:`~actiontrain.export.convert` (PyTorch to OpenVINO, Model API metadata, parity),
:mod:`~actiontrain.export.manifest` (``manifest.json``), :mod:`~actiontrain.export.store`
(publish with the manifest last, pull with checksums checked), :mod:`~actiontrain.export.exporter`
(:func:`export_model`: a live model to an export) and :mod:`~actiontrain.export.quantize` (NNCF INT8).
"""

from actiontrain.export.exporter import EXPORT_DIR, ExportResult, export_model

__all__ = ["EXPORT_DIR", "ExportResult", "export_model"]
