"""Launching training jobs: the TorchX component and helpers that run inside pods."""
