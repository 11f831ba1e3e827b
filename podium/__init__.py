"""podium: a keyboard-driven terminal cockpit for training symbolic-music models.

One import package: ``podium.engine`` trains, stores, measures and generates (it never imports
the UI); ``podium.tui`` is the Textual dashboard and the console script. In the repository the
two live in the top-level folders ``engine/`` and ``tui/`` (mapped by setuptools' package-dir).
"""

__version__ = "0.1.0"
