"""The bytewax layer and nothing else: the flow, its steps, sources, sinks, the loopback and
the event clock. The only package of Wayfinder that imports bytewax."""
