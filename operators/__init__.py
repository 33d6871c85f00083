"""The decisions, as pure cores: plain Python driven by events and a clock."""
