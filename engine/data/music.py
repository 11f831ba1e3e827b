"""Names shared by every symbolic-music family: pitch classes, keys and emotion quadrants."""

from __future__ import annotations

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
"""Pitch-class names, sharps only, index = pitch class."""
MODES = ("maj", "min")
KEYS = tuple(f"{pc}:{mode}" for mode in MODES for pc in PITCH_CLASSES)
"""The 24 keys, ``C:maj`` .. ``B:maj`` then ``C:min`` .. ``B:min``."""
EMOTIONS = ("Q1", "Q2", "Q3", "Q4")
"""Russell's quadrants as EMOPIA labels them: Q1 high valence/high arousal, Q2 low/high, Q3
low/low, Q4 high/low."""
