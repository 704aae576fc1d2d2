"""Datumaro importer plugins for the supported action-dataset layouts, and their registration.

Importing this package registers ``ucf101``, ``hmdb51``, ``jester`` and a remote-aware ``kinetics``
with Datumaro, so ``datumaro.Dataset.import_from(path, "ucf101")`` and ``Dataset.detect(path)``
know them; Datumaro's own ``datumaro`` format is the internal representation.
"""

from __future__ import annotations

from datumaro.components.environment import DEFAULT_ENVIRONMENT, Environment
from datumaro.components.lazy_plugin import get_lazy_plugin
from datumaro.plugins.data_formats.datumaro.base import DatumaroBase
from datumaro.plugins.data_formats.datumaro.importer import DatumaroImporter

from actiontrain.data.formats.common import FLIP_PAIRS_INFO
from actiontrain.data.formats.hmdb51 import Hmdb51Base, Hmdb51Importer
from actiontrain.data.formats.jester import JESTER_FLIP_PAIRS, JesterBase, JesterImporter
from actiontrain.data.formats.kinetics import KineticsBase, KineticsImporter
from actiontrain.data.formats.ucf101 import Ucf101Base, Ucf101Importer
from actiontrain.data.layouts import FORMATS, SPLIT_FORMATS

__all__ = [
    "FLIP_PAIRS_INFO",
    "FORMATS",
    "JESTER_FLIP_PAIRS",
    "SPLIT_FORMATS",
    "build_environment",
    "register_plugins",
]


_PLUGINS = (
    (Ucf101Base, "DatasetBase"),
    (Ucf101Importer, "Importer"),
    (Hmdb51Base, "DatasetBase"),
    (Hmdb51Importer, "Importer"),
    (JesterBase, "DatasetBase"),
    (JesterImporter, "Importer"),
    (KineticsBase, "DatasetBase"),
    (KineticsImporter, "Importer"),
)


def _lazy_plugins() -> list:
    plugins = []
    for plugin, kind in _PLUGINS:
        metadata = {"file_extensions": plugin.get_file_extensions()} if kind == "Importer" else {}
        plugins.append(get_lazy_plugin(f"{plugin.__module__}.{plugin.__qualname__}", plugin.NAME, kind, [], metadata))
    return plugins


def register_plugins() -> None:
    """Makes Datumaro's default environments know this project's formats (idempotent).

    Datumaro keeps its built-in plugins in a class-level list that every new ``Environment``
    (e.g. the one ``Dataset.detect`` creates) registers; ours join that list, after Datumaro's,
    so the remote-aware ``kinetics`` replaces the disk-only one.
    """
    builtins = Environment._load_builtin_plugins()
    if getattr(Environment, "_actiontrain_registered", False):
        return
    plugins = _lazy_plugins()
    builtins.extend(plugins)
    DEFAULT_ENVIRONMENT.register_plugins(plugins)
    Environment._actiontrain_registered = True


def build_environment() -> Environment:
    """A Datumaro environment that knows exactly the supported formats (fast, unambiguous detection)."""
    environment = Environment(use_lazy_import=False)
    environment._builtins_initialized = True  # skip importing every Datumaro plugin
    environment.register_plugins(
        [plugin for plugin, _ in _PLUGINS] + [DatumaroBase, DatumaroImporter]
    )
    return environment


register_plugins()
