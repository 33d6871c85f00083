"""The simulation lab: a population with a hidden truth, its traffic on every channel,
its reactions to what it is sent, and the closed-loop evaluation. Never on the
production path."""
