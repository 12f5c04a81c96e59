"""The `framemem` command: a thin layer over the pipelines and the training entry points."""
from .main import build_parser, main

__all__ = ["build_parser", "main"]
