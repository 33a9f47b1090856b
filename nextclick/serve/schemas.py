"""Request and response bodies of the service (pydantic), built for one :class:`Settings`: the
id length and list limits they state are the settings' own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from nextclick.serve.settings import INT64_MAX, INT64_MIN, Settings


def item_id_type(max_id_length: int) -> Any:
    """An item id: an int64 (strict: no booleans, no floats) or a string of 1 to
    ``max_id_length`` characters (:meth:`Settings.item_id_ok` states the same rule)."""
    as_int = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX, strict=True)]
    as_str = Annotated[str, StringConstraints(min_length=1, max_length=max_id_length)]
    return as_int | as_str


class ErrorOut(BaseModel):
    """The body of every error answer: what was wrong (a list of fields for a 422)."""

    detail: str | list[dict[str, Any]]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error answers ``codes`` a route can give."""
    what = {
        400: "Malformed request (e.g. a session id that is not valid UTF-8)",
        401: "Missing or wrong admin token",
        403: "Reload disabled (no admin token configured)",
        404: "No such session",
        408: "The request body did not arrive in time",
        413: "Request body or an item list too large",
        422: "Invalid body or parameter",
        503: "The model process is restarting or the session store is unreachable",
    }
    return {c: {"model": ErrorOut, "description": what[c]} for c in codes}


class ReloadBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_dir: str | None = Field(
        None, max_length=4096, description="New artifact directory (default: the current one, re-read)."
    )


@dataclass(frozen=True)
class Schemas:
    """The bodies whose item ids follow the settings."""

    click: type[BaseModel]
    stateless: type[BaseModel]
    recommendation: type[BaseModel]
    session: type[BaseModel]
    explanation: type[BaseModel]
    models: type[BaseModel]
    items: type[BaseModel]
    categories: type[BaseModel]


def build_schemas(settings: Settings) -> Schemas:
    """The request and response bodies for ``settings``. Limits that answer 413 rather than 422
    (list lengths) are checked by :func:`nextclick.serve.service.check_options`. Fields are
    strict: ``k`` is a JSON integer (not ``true`` or ``"5"``), ``exclude_seen`` a JSON boolean."""
    ItemId = item_id_type(settings.max_id_length)  # noqa: N806 (a type)

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        k: int | None = Field(
            None, ge=1, le=settings.max_k, strict=True,
            description=f"How many items (default {settings.default_k}, at most {settings.max_k}).",
        )
        exclude_seen: bool = Field(False, strict=True, description="Never recommend an item the session already clicked.")
        exclude_last: bool | None = Field(
            None, strict=True,
            description="Leave out the item of the session's last click (default: when the model's training data "
                        "dropped consecutive repeats, as then the last click is never the next).",
        )
        allow: list[ItemId] | None = Field(None, description="Recommend only these items (e.g. in stock).")
        deny: list[ItemId] | None = Field(None, description="Never recommend these items (e.g. out of stock).")

    class ClickBody(Options):
        item: ItemId = Field(..., description="The clicked item's id (the shop's own id).")

    class StatelessBody(Options):
        items: list[ItemId] = Field(..., description="The session's clicks so far, oldest first.")

    class RecommendationOut(BaseModel):
        items: list[ItemId]
        scores: list[float]
        session_id: str | None = None
        n_clicks: int = 0
        unknown_items: list[ItemId] = Field(
            default_factory=list, description="Ids in this request the model does not know (ignored)."
        )
        fallback: bool = Field(False, description="No known click: the most popular items.")
        model: str = Field("", description="The artifact's content id.")
        model_name: str = Field("", description="The served model's name.")

    class SessionOut(BaseModel):
        session_id: str
        n_clicks: int
        items: list[ItemId] = Field(..., description="The clicks the service keeps, oldest first.")

    class Influence(BaseModel):
        position: int = Field(..., description="The click's place among the explained clicks (0: oldest).")
        item: ItemId
        score_without: float = Field(..., description="The item's score with this click left out.")
        score_change: float = Field(..., description="score - score_without: > 0 when the click pushes the item up.")
        rank_without: int
        rank_change: int = Field(..., description="rank_without - rank: > 0 when the item ranks higher thanks to the click.")

    class Neighbour(BaseModel):
        session: int = Field(..., description="The training session's number.")
        similarity: float
        contribution: float = Field(..., description="What it adds to the item's score.")
        items: list[ItemId] = Field(..., description="The session's items (at most 20).")

    class ExplanationOut(BaseModel):
        session_id: str
        model: str
        item: ItemId
        score: float
        rank: int = Field(..., description="0-based rank in the full catalogue (ties count against the item).")
        clicks: list[ItemId] = Field(..., description="The explained clicks, oldest first (the last 50 known).")
        influence: list[Influence]
        attention: dict[str, list[list[float]]] | None = Field(
            None, description="SASRec: {'blocks': per block, the last position's attention over the clicks}.")
        neighbours: list[Neighbour] | None = Field(None, description="V-SKNN: neighbour sessions holding the item.")
        neighbour_counts: dict[str, int] | None = None
        truncated: bool = Field(..., description="The session had more known clicks than were explained.")

    class ModelInfo(BaseModel):
        name: str
        model: str
        model_id: str
        n_items: int
        explanations: list[str]

    class ModelsOut(BaseModel):
        default: str
        models: list[ModelInfo]

    class Item(BaseModel):
        id: ItemId
        title: str
        category: str | None = None
        price: float | None = None
        image_url: str | None = None

    class ItemsOut(BaseModel):
        total: int | None = Field(None, description="Matches in all (a search); null for a lookup by ids.")
        items: list[Item]

    class Category(BaseModel):
        name: str
        n_items: int

    class CategoriesOut(BaseModel):
        categories: list[Category]

    return Schemas(ClickBody, StatelessBody, RecommendationOut, SessionOut, ExplanationOut, ModelsOut, ItemsOut, CategoriesOut)
