"""Flower ServerApp: round orchestration (when, whom, with what). Never imports ``clients``."""
