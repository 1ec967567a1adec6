"""Flower ClientApp and the device-side learners. Never imports ``server``."""
