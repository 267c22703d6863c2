"""Torch-free maths shared by the loop and the report: AULC, sampling, stopping signals, metrics."""
