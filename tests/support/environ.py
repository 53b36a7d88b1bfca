"""``os.environ`` that fails a test on any write: proof that a run mode builds its settings explicitly."""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager


class EnvironmentWritten(AssertionError):
    """Raised when code under test writes the process environment."""


class ReadOnlyEnviron(MutableMapping[str, str]):
    """The environment as it was, readable as ever; setting or deleting a variable raises."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __setitem__(self, key: str, value: str) -> None:
        raise EnvironmentWritten(f"os.environ[{key!r}] = {value!r}")

    def __delitem__(self, key: str) -> None:
        raise EnvironmentWritten(f"del os.environ[{key!r}]")

    def copy(self) -> dict[str, str]:
        return dict(self._values)


@contextmanager
def environment_read_only() -> Iterator[None]:
    """Within the block, ``os.environ`` is a :class:`ReadOnlyEnviron` of its current values
    (pydantic-settings reads ``os.environ`` at each construction, so it reads this one)."""
    real = os.environ
    # replacing the mapping is the point (B003 warns that it does not clear the environment)
    os.environ = ReadOnlyEnviron(dict(real))  # type: ignore[assignment]  # noqa: B003
    try:
        yield
    finally:
        os.environ = real  # noqa: B003
