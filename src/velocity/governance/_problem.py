"""One finding of a verifier: where it is, what is wrong, and which event it concerns."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Problem"]


@dataclass(frozen=True)
class Problem:
    """A problem found while verifying governance files.

    Attributes
    ----------
    where : str
        The file concerned, relative to the directory checked (``"audit_log.jsonl"``, or
        ``"governance/audit_log.jsonl"`` in a :class:`AuditReport`).
    message : str
        What is wrong, naming the event, client or file (``"event 7: hash does not match its
        content"``).
    event : int or None
        Index of the audit event concerned, when there is one.

    Examples
    --------
    >>> str(Problem("audit_log.jsonl", "event 7: hash does not match its content", 7))
    'audit_log.jsonl: event 7: hash does not match its content'
    """

    where: str
    message: str
    event: int | None = None

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"
