"""The footer of podium's screens: Textual's, fitted to the terminal's width.

Textual's footer lays out every shown key in one row and lets the ones past the right edge
fall off: on an 80-column run screen, with the checkpoints table focused (its keys first), that
was ``q Quit`` and ``? Help``, the two a new user needs, and a stray letter of a cut-off key
showed past the palette key. This one hides whole keys, the last first, until the rest fits,
and never hides the app's own keys (quit, help) or the screen's way back (``esc``).
"""

from __future__ import annotations

from typing import ClassVar

from rich.cells import cell_len
from textual.binding import BindingType
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

KEPT_ACTIONS = frozenset({"back", "close", "cancel"})
"""Screen actions always shown besides the app's own: the way out of a screen."""


class PodiumFooter(Footer):
    BINDINGS: ClassVar[list[BindingType]] = []
    """Its scroll keys (never focused) stay out of help and the palette."""

    _shown: tuple = ()

    def _signature(self) -> tuple:
        return tuple(
            (key, b.action, b.description, enabled)
            for key, (_, b, enabled, _) in self.screen.active_bindings.items()
            if b.show
        )

    async def recompose(self) -> None:
        """Rebuild the keys when the shown bindings changed, then fit them.

        Textual recomposes on every bindings signal (each focus change, each
        ``refresh_bindings``), even when the keys stay the same; each rebuild left the footer
        blank for a frame (a flicker, and a snapshot caught it)."""
        signature = self._signature() if self.is_attached else ()
        if signature and signature == self._shown and self.children:
            self.fit()
            return
        await super().recompose()
        self._shown = signature
        self.fit()

    def on_resize(self) -> None:
        self.fit()

    def _kept(self, key: FooterKey) -> bool:
        app_actions = {getattr(b, "action", None) for b in type(self.app).BINDINGS}
        return key.action in app_actions or key.action in KEPT_ACTIONS

    def fit(self) -> None:
        """Show as many keys as the width holds, hiding the least important (the last) first."""
        if not self.is_attached or self.size.width <= 0:
            return
        items: list[Widget] = []
        palette = 0
        for child in self.children:
            if isinstance(child, FooterKey) and child.has_class("-command-palette"):
                palette = self._width_of(child)
            else:
                items.append(child)
        room = self.size.width - palette
        widths = [self._width_of(item) for item in items]
        shown = [True] * len(items)
        for i in reversed(range(len(items))):
            if sum(w for w, s in zip(widths, shown, strict=True) if s) <= room:
                break
            item = items[i]
            if isinstance(item, FooterKey) and self._kept(item):
                continue
            shown[i] = False
        for item, show in zip(items, shown, strict=True):
            if item.display != show:
                item.display = show

    def _width_of(self, widget: Widget) -> int:
        """Cells a key takes, from its text and the footer's style (compact or not): measured
        before the keys' own styles apply, as the fit runs right after a recompose."""
        if not isinstance(widget, FooterKey):
            return widget.outer_size.width
        key, text = cell_len(widget.key_display), cell_len(widget.description)
        if self.compact:  # "k text", then a margin; the palette key has a border instead
            width = key + (1 + text if text else 0) + 1
            return width + (1 if widget.has_class("-command-palette") else 0)
        width = 1 + key + 1 + (text + 1 if text else 0)  # " k " then "text "
        return width + (2 if widget.has_class("-command-palette") else 0)
