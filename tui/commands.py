"""A command palette provider that offers every key binding of the current screen as a command.

The palette (ctrl+p) then reaches every action without remembering keys: bindings declared by
podium's screens and widgets, and the app's own, each shown as what it does (the help's words)
with its key, and where it applies; never a class or action name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import partial

from textual.app import SystemCommand
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.dom import DOMNode

REPLACED_SYSTEM_COMMANDS = frozenset({"Quit", "Keys"})
"""Textual's palette entries that podium's own bindings replace: ``q`` (which asks first while
a run trains here) and ``?`` (help: every key)."""


def _declared(node: DOMNode) -> list[Binding]:
    return [b for b in getattr(type(node), "BINDINGS", []) if isinstance(b, Binding)]


def binding_sources(screen: DOMNode) -> Iterator[tuple[DOMNode, Binding]]:
    """(node, binding) for the app, the screen and podium widgets on it; one entry per action.

    A screen's binding that its ``check_action`` hides (False: the run has nothing for it, like
    ``m`` without a matrix metric) is left out, as the footer leaves it out."""
    seen: set[tuple[int, str]] = set()
    nodes: list[DOMNode] = [screen.app, screen]
    nodes += [w for w in screen.walk_children() if type(w).__module__.startswith("podium.tui.")]
    for node in nodes:
        for binding in _declared(node):
            key = (id(node), binding.action)
            if key in seen or not binding.description:
                continue
            if node is screen and screen.check_action(binding.action, ()) is False:
                continue
            seen.add(key)
            yield node, binding


def where(node: DOMNode, screen: DOMNode) -> str:
    """Where a binding applies, in words: help's section title and the palette's second line."""
    if node is screen.app:
        return "everywhere"
    if node is screen:
        words = type(screen).__name__.removesuffix("Screen").removesuffix("Modal")
        return f"{words.lower()} screen"
    group = getattr(node, "HELP_GROUP", None)
    if group:
        return group
    return f"{type(node).__name__.lower()} (when focused)"


def describe(binding: Binding) -> str:
    """The long description of a binding (its tooltip) where it has one, else the footer's."""
    return binding.tooltip or binding.description


def key_label(binding: Binding) -> str:
    if binding.key_display:
        return binding.key_display
    key = binding.key.split(",")[0]
    return {"space": "space", "question_mark": "?", "escape": "esc"}.get(key, key)


def system_commands(commands: Iterable[SystemCommand]) -> Iterator[SystemCommand]:
    """Textual's own palette entries (theme, screenshot, maximize), less the replaced ones."""
    return (c for c in commands if c.title not in REPLACED_SYSTEM_COMMANDS)


class ActionsProvider(Provider):
    """Every declared binding of the screen under the palette, runnable by name."""

    def _commands(self) -> list[tuple[str, str, DOMNode, str]]:
        out = []
        for node, binding in binding_sources(self.screen):
            title = f"{describe(binding)} ({key_label(binding)})"
            help_text = f"key {key_label(binding)} · {where(node, self.screen)}"
            out.append((title, help_text, node, binding.action))
        return out

    async def discover(self) -> Hits:
        for title, help_text, node, action in self._commands():
            yield DiscoveryHit(title, partial(node.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, node, action in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(title),
                    partial(node.run_action, action),
                    help=help_text,
                )
