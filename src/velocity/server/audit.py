"""The audit trail of a run: :mod:`velocity.governance` wired into the round engine.

:class:`AuditTrail` is a server stage (``audit``, after the simulated adversary: it digests
every row the round is about to aggregate, as the server received it) and an engine callback
(one ``round`` event per round). The events, in order::

    run_started    run identity, config digest, seed, initial model digest and model chain
                   head, the clients' record commitments (``client_commitments``)
    round          (one per round) selected / participated clients, failures and their
                   reasons, each aggregated update's digest and sample count, the strategy's
                   rule and the rows it excluded or dropped, model digest before and after,
                   the model chain link, epsilon so far, simulated attacks, evaluation
    resumed        (after a restart) the round the run continued from; round events after it
                   supersede earlier events for the same rounds
    run_completed  final model digest and chain head, the digests of the run's files
                   (``files``)

The **model chain** is ``c_0 = sha256("velocity-model-chain/1" || m_0)``,
``c_r = sha256(c_{r-1} || m_r)`` over the hex model digests ``m_r`` (:func:`model_state_digest`);
it contains nothing random, so a replay of the same configuration reproduces it exactly
(``velocity replay``). Events hold no wall-clock time for the same reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from velocity import governance as gov
from velocity.errors import ValidationError
from velocity.strategies import RoundBatch
from velocity.types import ParamSpec, RoundResult, StageContext, StageState

if TYPE_CHECKING:
    from velocity.server.engine import RoundEngine

__all__ = ["AuditTrail", "chain_link", "chain_start", "model_state_digest"]

_CHAIN_TAG = b"velocity-model-chain/1"


def model_state_digest(spec: ParamSpec, params: Tensor) -> str:
    """:func:`velocity.governance.state_digest` of the flat ``params`` under ``spec``'s names."""
    return gov.state_digest(spec.unflatten(params.detach().cpu()))


def chain_start(initial_digest: str) -> str:
    """``c_0`` of the model chain."""
    return hashlib.sha256(_CHAIN_TAG + bytes.fromhex(initial_digest)).hexdigest()


def chain_link(previous: str, model_digest: str) -> str:
    """``c_r = sha256(c_{r-1} || m_r)`` (both as raw 32-byte digests)."""
    return hashlib.sha256(bytes.fromhex(previous) + bytes.fromhex(model_digest)).hexdigest()


@dataclass
class _Pending:
    client_ids: list[str]
    digests: list[str]
    samples: list[int]


class _DigestStage:
    """The ``audit`` server stage: digests every row about to be aggregated."""

    def __init__(self, trail: AuditTrail) -> None:
        self._trail = trail

    @property
    def name(self) -> str:
        return "audit"

    def init(self, spec: ParamSpec) -> StageState:
        return {}

    def apply(
        self, x: RoundBatch, state: StageState, ctx: StageContext
    ) -> tuple[RoundBatch, StageState, Mapping[str, Any]]:
        rows = x.rows.detach().to("cpu")
        self._trail._pending[ctx.round] = _Pending(
            list(x.client_ids), gov.digest_rows(rows), [int(n) for n in x.num_samples]
        )
        return x, state, {}


class AuditTrail:
    """Writes ``<directory>/audit_log.jsonl`` and ``audit_log.json`` as the run goes.

    Parameters
    ----------
    directory : path
        The run's ``governance/`` directory.
    write : bool
        Write the log files (``governance.save_audit_log``); else the events (and the model
        chain the replay manifest needs) are kept in memory only.

    The model's layout (names and shapes of the model digests) is the engine's, taken in
    :meth:`start`.
    """

    def __init__(self, directory: str | Path, *, write: bool = True) -> None:
        self.directory = Path(directory)
        self.write = write
        self.spec: ParamSpec | None = None
        self._pending: dict[int, _Pending] = {}
        self._writer: gov.AuditWriter | None = None
        self._log = gov.AuditLog()
        self._model = ""
        self._chain = ""
        self.stage = _DigestStage(self)
        self.model_chain: list[dict[str, Any]] = []

    def _append(self, kind: str, data: Mapping[str, Any], round_: int) -> None:
        if self._writer is not None:
            self._writer.append(kind, data, round=round_)
        else:
            self._log.append(kind, data, round=round_)

    def _digest(self, params: Tensor) -> str:
        assert self.spec is not None
        return model_state_digest(self.spec, params)

    # ------------------------------------------------------------------ lifecycle

    def start(
        self,
        engine: RoundEngine,
        *,
        run: Mapping[str, Any],
        client_commitments: Mapping[str, str],
        resume: bool = False,
    ) -> None:
        """Open the log: a ``run_started`` event, or, resuming, a ``resumed`` event after the
        existing ones (whose chain is verified first)."""
        self.spec = engine.spec
        digest = self._digest(engine.global_params)
        existing = self.write and (self.directory / gov.AUDIT_JSONL).exists()
        if resume and existing:
            # A line cut short by the crash is dropped (it was never a complete event).
            self._writer = gov.AuditWriter.resume(self.directory, drop_incomplete_tail=True)
            chain = self._chain_from(self._writer.log.events, engine.round)
            self._chain, self._model = chain[-1]["chain"], digest
            self.model_chain = chain
            if self.model_chain[-1]["model_digest"] != digest:
                raise ValidationError(
                    f"audit log: the restored model (round {engine.round}) has digest {digest} "
                    f"but the log recorded {self.model_chain[-1]['model_digest']} for it"
                )
            self._append("resumed", {"from_round": engine.round}, engine.round)
            return
        if existing:
            raise ValidationError(
                f"{self.directory} already holds an audit log; a fresh run must not mix its "
                "events with another run's (move it away or resume the run)"
            )
        if self.write:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._writer = gov.AuditWriter(self.directory)
        self._model = digest
        self._chain = chain_start(digest)
        self.model_chain = [{"round": 0, "model_digest": digest, "chain": self._chain}]
        self._append(
            "run_started",
            {
                **dict(run),
                "initial_model_digest": digest,
                "model_chain": self._chain,
                "client_commitments": dict(client_commitments),
            },
            0,
        )

    @staticmethod
    def _chain_from(events: Sequence[gov.AuditEvent], upto: int) -> list[dict[str, Any]]:
        chain: dict[int, dict[str, Any]] = {}
        for event in events:
            if event.kind == "run_started":
                chain[0] = {
                    "round": 0,
                    "model_digest": event.data["initial_model_digest"],
                    "chain": event.data["model_chain"],
                }
            elif event.kind == "round" and event.round is not None:
                chain[event.round] = {
                    "round": event.round,
                    "model_digest": event.data["model_after"],
                    "chain": event.data["model_chain"],
                }
        rounds = sorted(r for r in chain if r <= upto)
        if rounds != list(range(upto + 1)):
            raise ValidationError(
                f"audit log: resuming at round {upto} needs the events of rounds 0..{upto}; "
                f"the log has {rounds}"
            )
        return [chain[r] for r in rounds]

    def __call__(self, result: RoundResult, engine: RoundEngine) -> None:
        """The engine callback: one ``round`` event."""
        if self.spec is None:
            raise ValidationError("AuditTrail: start() was not called before the first round")
        pending = self._pending.pop(result.round, None)
        after = self._digest(engine.global_params)
        link = chain_link(self._chain, after)
        aggregation = dict(result.aggregation)
        updates = {}
        if pending is not None:
            updates = {
                cid: {"digest": dig, "num_samples": n}
                for cid, dig, n in zip(
                    pending.client_ids, pending.digests, pending.samples, strict=True
                )
            }
        privacy = result.stages.get("privacy", {})
        record = result.to_dict()  # JSON-safe values (non-finite floats -> None)
        data = {
            "selected": list(result.selected_client_ids),
            "participated": list(result.participated),
            "failures": [f.to_dict() for f in result.failures],
            "updates": updates,
            "strategy": {
                "rule": aggregation.get("rule"),
                "skipped": aggregation.get("skipped"),
                "excluded_clients": aggregation.get("excluded_clients"),
                "dropped_nonfinite_clients": aggregation.get("dropped_nonfinite_clients", []),
            },
            "model_before": self._model,
            "model_after": after,
            "model_chain": link,
            "epsilon": privacy.get("epsilon"),
            "attacks": record["attack_results"],
            "global_accuracy": record["global_accuracy"],
            "global_loss": record["global_loss"],
        }
        self._append("round", data, result.round)
        self._model, self._chain = after, link
        self.model_chain.append({"round": result.round, "model_digest": after, "chain": link})

    def finish(self, files: Mapping[str, str]) -> None:
        """Append ``run_completed`` with the digests of ``files`` (relative path -> digest)
        and write ``audit_log.json``."""
        if self.spec is None:
            raise ValidationError("AuditTrail: start() was not called")
        self._append(
            "run_completed",
            {
                "final_model_digest": self._model,
                "model_chain": self._chain,
                "rounds": self.model_chain[-1]["round"],
                "files": dict(sorted(files.items())),
            },
            self.model_chain[-1]["round"],
        )
        self.close()

    def close(self) -> None:
        """Write ``audit_log.json`` for what was logged so far (an interrupted run)."""
        if self._writer is not None:
            self._writer.close()

    @property
    def log(self) -> gov.AuditLog:
        """The events so far."""
        return self._log if self._writer is None else self._writer.log

    @property
    def head(self) -> str:
        return self.log.head

    @property
    def events(self) -> int:
        return len(self.log)
