"""Problems found in a dataset, and a Datumaro error policy that collects them instead of failing."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from datumaro.components.contexts.importer import ImportErrorPolicy
from datumaro.components.errors import AnnotationImportError, ItemImportError

from actiontrain.storage import redact

__all__ = ["CollectingErrorPolicy", "Problem"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One thing wrong with a dataset; ``error`` problems make it unusable for training."""

    severity: Severity
    """``error``: training would skip or fail on it; ``warning``: worth knowing."""
    kind: str
    """Stable identifier: missing_media, unknown_label, duplicate_item, bad_annotation, undecodable, empty_class."""
    message: str
    """One line for people: what is wrong, where, and how to fix it."""
    item: str | None = None
    """``subset/item_id`` of the item concerned, if any."""

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.item}: " if self.item else ""
        return f"{self.severity:<7} {self.kind:<15} {where}{self.message}"


class CollectingErrorPolicy(ImportErrorPolicy):
    """Records item and annotation errors as :class:`Problem` s; the importer skips those items."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def _record(self, error: Exception) -> None:
        cause = error.__cause__ or error
        item_id, subset = getattr(error, "item_id", (None, None))
        message = redact(str(cause))
        self.problems.append(
            Problem(
                severity="error",
                kind=getattr(cause, "kind", "bad_annotation"),
                message=message,
                item=f"{subset}/{item_id}",
            )
        )

    def _handle_item_error(self, error: ItemImportError) -> None:
        self._record(error)

    def _handle_annotation_error(self, error: AnnotationImportError) -> None:
        self._record(error)
