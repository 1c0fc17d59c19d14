"""Benchmarks: fixed synthetic inputs, each stage timed next to a baseline measured in the same run.

``make bench`` times them (JSON in build/benchmarks.json); the test command runs each once, untimed,
so none can rot. Compare ratios, not absolute numbers: the machines are noisy.
"""
