"""Name tables of the pieces a model file names (layers, losses) and Trainer(metrics=[...])
reads, and the one rule for adding a user's piece to them.

Registration is process-global: a file that names a custom piece loads only in a process
that has imported the module registering it.
"""
from __future__ import annotations

from typing import Any


def register(table: dict[str, Any], builtins: "set[str] | frozenset[str]", name, obj, what: str) -> None:
    """Enter `obj` in `table` under `name`, refusing a built-in's name and a name another
    object holds. The same object again, or a redefinition of it (same module and qualified
    name: a notebook cell run twice), is fine: the newest definition is kept."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"register_{what}: the name should be a Python identifier, got {name!r:.60}")
    if name in builtins:
        raise ValueError(f"register_{what}: {name!r} is the name of pyneuro's built-in {what}; "
                         f"register yours under another name (register_{what}(..., name='...'))")
    old = table.get(name)
    if old is not None and old is not obj and _qualified(old) != _qualified(obj):
        raise ValueError(f"register_{what}: {name!r} is already registered for {_qualified(old)}; "
                         f"register {_qualified(obj)} under another name")
    table[name] = obj


def _qualified(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def registered_name(table: dict[str, Any], obj) -> str | None:
    """The name `obj` is registered under in `table`, or None."""
    return next((name for name, entry in table.items() if entry is obj), None)


def not_registered(obj, what: str, where: str) -> ValueError:
    """The error for writing a file that names an unregistered `obj`: it could not be loaded."""
    return ValueError(f"{where}: {_qualified(obj)} is not a registered {what}, so a file naming it could not "
                      f"be loaded; register it with @pyneuro.register_{what} (and import the module that "
                      f"defines it before pyneuro.load or Trainer.from_checkpoint)")


def load_hint(what: str) -> str:
    """What to say when a file names a {what} this process does not know."""
    return f"(a custom {what}? import the module that registers it with pyneuro.register_{what} first)"
