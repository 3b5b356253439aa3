"""Comparing views of the log across agencies (issue 10, item 5).

Every node signs the newest cosigned checkpoint it verified (size and root) into what
it sends: its headers, receipts and lifecycle actions. A node that receives one of
those compares the sender's view with its own:

* the same size with another root: the broker showed the two agencies different logs
  (a split view);
* a smaller size: the broker must prove the sender's tree a prefix of this node's
  (an RFC 9162 consistency proof from the sender's size to its own); if it cannot, or
  the proof fails, the views conflict;
* a larger size: kept (bounded) and compared once this node's own head has grown past it.

Only the same-size comparison runs as a notice is taken in; the proofs are fetched by
the node's sweep (once a second, each distinct view once), off the delivery path.

A conflict is a `view_differs` finding naming the sender and both heads; nothing is
refused for it (the notice, receipt or action is genuine: the sender signed it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from broker.client.logview import LogView
from broker.core import merkle
from broker.errors import BrokerError, RateLimited, Unavailable

MAX_PENDING = 1024

Report = Callable[[str, str, str, str], object]  # (kind, notice id, subject, detail)
Proof = Callable[[int, int], Awaitable[Sequence[bytes]]]


class Gossip:
    def __init__(self, log_view: LogView, proof: Proof, report: Report) -> None:
        self.log_view = log_view
        self.proof = proof
        self.report = report
        self.pending: dict[tuple[int, bytes], tuple[str, str]] = {}  # view -> (who, notice)
        self.proven: set[tuple[int, bytes]] = set()  # views shown a prefix of this node's

    def note(self, who: str, notice_id: str, size: int, root: bytes) -> None:
        """Take in `who`'s signed view (size, root): a conflict at this node's own size is
        reported at once; the others are compared by :meth:`recheck` (off the hot path)."""
        if not size or len(root) != 32 or (size, root) in self.proven:
            return
        mine, my_root = self.log_view.head
        if size == mine:
            if root != my_root:
                self._differs(who, notice_id, size, root, mine, my_root, "another root")
            else:
                self.proven.add((size, root))
            return
        if len(self.pending) < MAX_PENDING:
            self.pending.setdefault((size, root), (who, notice_id))

    async def recheck(self) -> None:
        """Compare the views taken in with this node's head: each smaller one must be
        proven a prefix of it; larger ones wait until this node's head has grown."""
        mine, my_root = self.log_view.head
        if not mine:
            return
        for (size, root), (who, notice_id) in list(self.pending.items()):
            if size > mine:
                continue
            del self.pending[(size, root)]
            if size == mine:
                if root != my_root:
                    self._differs(who, notice_id, size, root, mine, my_root, "another root")
                continue
            try:
                proof = await self.proof(size, mine)
                merkle.verify_consistency(size, mine, root, my_root, proof)
            except merkle.ProofError as exc:
                self._differs(who, notice_id, size, root, mine, my_root, f"no prefix ({exc})")
                continue
            except (Unavailable, RateLimited):  # no answer is no evidence: retry next sweep
                self.pending[(size, root)] = (who, notice_id)
                return
            except BrokerError as exc:  # the broker cannot prove it at all
                self._differs(who, notice_id, size, root, mine, my_root, f"unprovable ({exc})")
                continue
            if len(self.proven) < MAX_PENDING:
                self.proven.add((size, root))

    def _differs(
        self,
        who: str,
        notice_id: str,
        size: int,
        root: bytes,
        mine: int,
        my_root: bytes,
        how: str,
    ) -> None:
        self.report(
            "view_differs",
            notice_id,
            who,
            f"{who} signed the log at size {size} root {root.hex()[:16]}…; this node verified "
            f"size {mine} root {my_root.hex()[:16]}…, {how}: the broker shows agencies "
            "different logs (a split view)",
        )
