"""Analysis tools: replay of logs, process-mining logs, the contact-map pictures, the
report, re-running decisions, champion and challenger."""
