"""One registry mechanism for every pluggable part (attention variants, decoder styles).

    ATTENTION = Registry("attention")
    @ATTENTION.register("bahdanau")
    class BahdanauAttention(Attention): ...
    ATTENTION.get("bahdanau")      # the class; an unknown name lists the valid ones

The name a class is registered under is the word users type in the config (``attention=bahdanau``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=type)


class Registry(dict):
    """A name -> class mapping; ``config_key`` is how users set it, used in error messages."""

    def __init__(self, config_key: str) -> None:
        super().__init__()
        self.config_key = config_key

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: make the class available as ``<config_key>=<name>``."""

        def decorator(cls: T) -> T:
            if name in self:
                raise ValueError(f"{self.config_key} {name!r} is registered twice")
            self[name] = cls
            cls.name = name
            return cls

        return decorator

    def get_class(self, name: str) -> type:
        if name not in self:
            raise ValueError(f"unknown {self.config_key} {name!r}; valid names: {', '.join(sorted(self))}")
        return self[name]
