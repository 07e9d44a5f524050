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


@pytest.fixture(scope="session", autouse=True)
def _private_tracker_database(tmp_path_factory):
    """Tests never read or write the developer's var/tracker.db: conversations and audit records of code run
    in-process go to a database of the test session's own (server stacks set theirs explicitly)."""
    import os

    if "TRACKER_STORE_URL" not in os.environ:
        path = tmp_path_factory.mktemp("var") / "tracker.db"
        os.environ["TRACKER_STORE_URL"] = f"sqlite:///{path}"
        yield
        os.environ.pop("TRACKER_STORE_URL", None)
    else:
        yield
