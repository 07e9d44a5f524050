"""Rasa-side glue (imported only by the Rasa server, in .venv-rasa): NLU component and REST channel."""
