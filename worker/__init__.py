"""The basket domain: course loading, canonical order, the tiler, the rules, generators and the
agent/orchestrator runtime that runs inside one tmux window."""
