"""The supervisor: tmux windows, processes, run state, the segment loop and the ``phase5`` CLI."""
