"""Writing a dataset in the internal representation: Datumaro's own format, media beside it.

Layout at the destination (exactly what Datumaro's ``datumaro`` exporter produces with media):
``annotations/<subset>.json`` and ``videos/<subset>/<file or frame folder>``. Media are copied
first and the annotation files last, so a reader that finds the annotations finds every video.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from datumaro.components.dataset import Dataset
from datumaro.components.media import Video

from actiontrain import storage
from actiontrain.data.catalog import ActionDataset
from actiontrain.data.formats.common import FLIP_PAIRS_INFO
from actiontrain.errors import ConfigError, DataError

__all__ = ["ConvertReport", "convert_dataset"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ConvertReport:
    """What a conversion wrote."""

    destination: str
    subsets: dict[str, int]
    """Items written per subset."""
    num_media_files: int
    skipped: list[str]
    """``subset/id`` of items left out because they have no media."""


def convert_dataset(
    source: ActionDataset, destination: str, *, flip_pairs: Sequence[tuple[str, str]] = (), workers: int = 16
) -> ConvertReport:
    """Writes ``source`` to ``destination`` (any fsspec URL) in Datumaro's format, media included.

    Args:
        source: The dataset, in any layout.
        destination: Where the Datumaro-format copy goes.
        flip_pairs: Class pairs that become each other under a horizontal flip, declared in the
            copy besides the source's own (UCF101's, HMDB51's and Kinetics' layouts have no place
            for them), so that training's flip swaps their labels.
        workers: Media files copied at once.

    Raises:
        ConfigError: a flip pair names a class the dataset does not have.
        DataError: two items of a subset have media with the same file name.
        StorageError: a media file cannot be read or the destination cannot be written.
    """
    pairs = [list(pair) for pair in source.flip_pairs]
    for pair in flip_pairs:
        unknown = [name for name in pair if name not in source.classes]
        if len(pair) != 2 or unknown:
            raise ConfigError(
                f"flip pair {list(pair)!r} must name two of the dataset's classes"
                + (f"; not a class: {', '.join(map(repr, unknown))}" if unknown else "")
                + f"; classes: {', '.join(source.classes)}"
            )
        if list(pair) not in pairs and list(reversed(pair)) not in pairs:
            pairs.append(list(pair))
    destination = destination.rstrip("/")
    items, copies, skipped = [], [], []
    names_seen: dict[tuple[str, str], str] = {}
    for item in source.dataset:
        if item.media is None:
            skipped.append(f"{item.subset}/{item.id}")
            continue
        name = item.media.name
        previous = names_seen.setdefault((item.subset, name), item.id)
        if previous != item.id:
            raise DataError(
                f"items {previous!r} and {item.id!r} of subset {item.subset!r} both have media named "
                f"{name!r}; Datumaro's format stores media by file name, so rename one of them"
            )
        copies.append((item.media, storage.join(destination, "videos", item.subset, name)))
        # Datumaro resolves a relative media path against videos/<subset>/.
        items.append(item.wrap(media=Video(name)))
    if skipped:
        logger.warning("%d items have no media and were left out, e.g. %s", len(skipped), skipped[0])

    # An earlier dataset here must not survive half-overwritten: its annotations go first.
    old_annotations = storage.join(destination, "annotations")
    if storage.exists(old_annotations):
        for relative in storage.find(old_annotations):
            storage.remove(storage.join(old_annotations, relative))

    def copy_media(job) -> int:
        media, target = job
        media.save(target)
        return 1

    with ThreadPoolExecutor(max_workers=workers) as pool:
        num_copied = sum(pool.map(copy_media, copies))

    infos = dict(source.dataset.infos())
    if pairs:
        infos[FLIP_PAIRS_INFO] = pairs
    dataset = Dataset.from_iterable(items, categories=source.dataset.categories(), media_type=Video, infos=infos)
    with tempfile.TemporaryDirectory(prefix="actiontrain-convert-") as staging:
        dataset.export(staging, "datumaro", save_media=False)
        annotation_files = sorted(
            os.path.relpath(os.path.join(root, name), staging)
            for root, _, names in os.walk(staging)
            for name in names
        )
        for relative in annotation_files:
            storage.copy(os.path.join(staging, relative), storage.join(destination, *relative.split(os.sep)))
    subsets: dict[str, int] = {}
    for item in items:
        subsets[item.subset] = subsets.get(item.subset, 0) + 1
    return ConvertReport(
        destination=destination, subsets=dict(sorted(subsets.items())), num_media_files=num_copied, skipped=skipped
    )
