"""``python -m gapscope.cli``."""

from gapscope.cli import app

app(prog_name="gapscope")
