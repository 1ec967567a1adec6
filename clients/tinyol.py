"""Moved to ``edge.online_head``: kept for clients.learners until the algorithm package lands."""

from edge.online_head import OnlineHead, RunningNorm

__all__ = ["OnlineHead", "RunningNorm"]
