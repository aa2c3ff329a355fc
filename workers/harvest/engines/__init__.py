"""Image search engines behind one interface (see ``base.Engine``)."""

from __future__ import annotations

from workers.harvest.engines.base import Engine, EngineBlocked, SearchResult, compose_query
from workers.harvest.engines.bing import BingEngine
from workers.harvest.engines.duckduckgo import DuckDuckGoEngine

ENGINES: dict[str, type[Engine]] = {
    BingEngine.name: BingEngine,
    DuckDuckGoEngine.name: DuckDuckGoEngine,
}

__all__ = ["ENGINES", "Engine", "EngineBlocked", "SearchResult", "compose_query"]
