"""Benchmark peers: the workload built the way a Python data engineer would otherwise
build it (Quix Streams around Wayfinder's own cores; a hand-written kafka-python
consumer with one rule), each a standalone program that `make bench` runs beside
Wayfinder's flow and that prints one JSON line of figures."""
