"""The API's list page (`object: "list"`, `data`, `first_id`, `last_id`, `has_more`), which the
SDK's cursor pages read: one shape for the files and the batches listings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, Literal, Self, TypeVar

from pydantic import BaseModel


class Listed(BaseModel):
    """An object a list page holds: the page's cursor is its id."""

    id: str


Item = TypeVar("Item", bound=Listed)


class ListPage(BaseModel, Generic[Item]):
    object: Literal["list"] = "list"
    data: list[Item]
    first_id: str | None
    last_id: str | None
    has_more: bool

    @classmethod
    def of(cls, data: Sequence[Item], *, has_more: bool) -> Self:
        return cls(
            data=list(data),
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=has_more,
        )
