"""Shared fixtures. The real core is cheap enough (about 2 s to load) to use everywhere: no mocks."""

from __future__ import annotations

import pytest

from assistant import config


@pytest.fixture(scope="session")
def source_text() -> str:
    return config.SOURCE_PATH.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def extractor():
    from assistant.entities import EntityExtractor

    return EntityExtractor()


@pytest.fixture(scope="session")
def retriever():
    pytest.importorskip("faiss")
    from assistant.retrieval import Retriever

    return Retriever.load()


@pytest.fixture(scope="session")
def assistant(retriever):
    from assistant.dialogue import Assistant

    return Assistant(retriever)


@pytest.fixture(scope="session")
def corpus_by_id() -> dict:
    from assistant import corpus

    return {r["id"]: r for r in corpus.load()}
