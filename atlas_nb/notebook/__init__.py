"""The notebook layer: ``%load_ext atlas_nb`` registers the ``%atlas`` magics.

Only this package imports IPython, ipywidgets and pandas, and it imports them
lazily, so loading the extension stays fast. State that must survive
``%reload_ext`` (the sandbox a notebook turned on) lives on the shell, not in
module globals.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_ipython_extension", "state", "unload_ipython_extension"]

_ATTR = "_atlas_nb_extension"


class ExtensionState:
    """What the extension keeps on the shell between load, unload and reload."""

    def __init__(self) -> None:
        self.magics: Any = None
        self.sandbox: Any = None  # a sandbox `%atlas sandbox on` started (kept across reloads)

    @property
    def loaded(self) -> bool:
        """Whether the magics are registered."""
        return self.magics is not None

    def __repr__(self) -> str:
        return f"ExtensionState(loaded={self.loaded}, sandbox={self.sandbox!r})"


def state(shell: Any) -> ExtensionState:
    """The extension state kept on ``shell`` (created on first use)."""
    current = getattr(shell, _ATTR, None)
    if not isinstance(current, ExtensionState):
        current = ExtensionState()
        setattr(shell, _ATTR, current)
    return current


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%atlas`` on ``ipython``; loading twice is a no-op."""
    st = state(ipython)
    if st.loaded:
        return
    from .magics import AtlasMagics

    magics = AtlasMagics(shell=ipython)
    ipython.register_magics(magics)
    st.magics = magics


def unload_ipython_extension(ipython: Any) -> None:
    """Stop every background thread (panels, tails, refreshers) and remove ``%atlas``.

    Never terminates a compute: tracked computes stay tracked (and are still
    terminated when the kernel shuts down). A sandbox turned on with
    ``%atlas sandbox on`` keeps running too, since its computes live in it;
    ``%atlas sandbox off`` stops it.
    """
    st = state(ipython)
    from .widgets import _background

    _background.stop_all()
    if st.magics is None:
        return
    manager = ipython.magics_manager
    for kind in ("line", "cell"):
        table = manager.magics.get(kind, {})
        if getattr(table.get("atlas"), "__self__", None) is st.magics:
            del table["atlas"]
    manager.registry.pop(type(st.magics).__name__, None)
    configurables = getattr(ipython, "configurables", None)
    if isinstance(configurables, list) and st.magics in configurables:
        configurables.remove(st.magics)
    st.magics = None
