"""The ratios the targets are stated in, each from two stages measured in one run of
`scripts/bench`.

This machine runs at different speeds on different days (up to about 2.7 times apart):
a flow measured on a fast day over cores measured on a slow one says nothing of either.
So a ratio is taken only when both of its stages ran in the same invocation, and it is
dropped once one of them is measured again without the other.
"""

#: ratio -> (numerator's key, its stage, denominator's key, its stage)
RATIOS: dict[str, tuple[str, str, str, str]] = {
    "flow_to_core": ("bytewax_inproc_eps", "flow", "plain_loop_eps", "core"),
    "kafka_to_core": ("kafka_e2e_eps", "kafka", "plain_loop_eps", "core"),
    "flow_to_floor": ("bytewax_inproc_eps", "flow", "engine_floor_eps", "floor"),
    "kafka_to_quix": ("kafka_e2e_eps", "kafka", "quix_eps", "kafka"),
}


def ratios(results: dict[str, object]) -> None:
    """Set each ratio whose two stages ran in one invocation (their `run`), or are one
    stage; drop the others."""
    stages = results.get("stages", {})
    assert isinstance(stages, dict)
    for name, (top_key, top_stage, bottom_key, bottom_stage) in RATIOS.items():
        top, bottom = results.get(top_key), results.get(bottom_key)
        runs = {stages.get(top_stage, {}).get("run"), stages.get(bottom_stage, {}).get("run")}
        together = top_stage == bottom_stage or (len(runs) == 1 and None not in runs)
        if together and isinstance(top, int | float) and isinstance(bottom, int | float) and bottom:
            results[name] = round(top / bottom, 3)
        else:
            results.pop(name, None)
