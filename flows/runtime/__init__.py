"""What runs around the flow: settings from the environment, topics, metrics, the runner
(progress and summary) and what an embedded run writes at its end."""
