"""One module per ``phase5`` command; each exposes ``COMMANDS``, the click commands it defines."""
