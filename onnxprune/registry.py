"""Named classes filed in a table: the one decorator behind `register_pass` and `register_step`.

    PASSES: dict[str, type[Pass]] = {}
    register_pass = registrar(PASSES, "pass")

    @register_pass("dead-neurons")        # sets RemoveDeadNeurons.name and PASSES["dead-neurons"]
    class RemoveDeadNeurons(Pass): ...
"""

from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T", bound=type)


def registrar(table: dict[str, T], kind: str) -> Callable[[str], Callable[[T], T]]:
    """A decorator factory: `@register(name)` sets the class's `name` and files it under that name, once."""

    def register(name: str) -> Callable[[T], T]:
        def wrap(cls: T) -> T:
            if name in table:
                raise ValueError(f"{kind} '{name}' registered twice")
            cls.name = name
            table[name] = cls
            return cls

        return wrap

    return register
