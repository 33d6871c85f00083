"""`make bench`: Wayfinder measured the way its users will judge it, beside what they
would use instead (bytewax's own floor, Quix Streams, a hand-written consumer).

Benchmarks report; tests never time anything. Nothing here is on the production
path: it drives the product from outside, as a user does (its CLI, its topics).
"""
