"""Dataset problems that name the file, episode and field they concern."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset on disk.

    ``file`` is relative to the dataset root; ``severity`` is ``"error"`` (the dataset cannot be read
    as written) or ``"warning"`` (readable, but not as LeRobot would write it, e.g. crash leftovers
    that :meth:`robolearn.data.writer.LeRobotWriter.open` repairs).
    """

    file: str | None
    message: str
    episode: int | None = None
    field: str | None = None
    severity: str = "error"

    def __str__(self) -> str:
        parts = [self.file or "<dataset>"]
        if self.episode is not None:
            parts.append(f"episode {self.episode}")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        return ": ".join(parts) + f": {self.message}"


class DatasetError(Exception):
    """A dataset on disk is malformed; ``problems`` lists what and where (the first one is the message)."""

    def __init__(self, problems: Problem | list[Problem] | str, *, file: str | None = None):
        if isinstance(problems, str):
            problems = [Problem(file, problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        first = str(self.problems[0]) if self.problems else "invalid dataset"
        more = len(self.problems) - 1
        super().__init__(first + (f" (and {more} more problem{'s' * (more > 1)})" if more > 0 else ""))

    @property
    def file(self) -> str | None:
        return self.problems[0].file if self.problems else None

    @property
    def episode(self) -> int | None:
        return self.problems[0].episode if self.problems else None
