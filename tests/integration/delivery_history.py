"""What clients saw during a crash or failover test, and the check over it.

Three records, filled in by the test: every publish the broker acknowledged (with
the recipients it was sealed for), every notice each recipient's application was
handed (and how often), and which deliveries the broker reports as receipted.
`problems()` lists every way the history breaks the promise "nothing acknowledged
is lost": an acknowledged notice that some recipient's application never saw,
saw twice, or that is not receipted. A notice whose publish was not acknowledged
may or may not arrive (the client gave up, the broker may still have stored it).

A shared crash-test history checker is being written for broker/bench/history.py;
once it is on main, tests can hand it these same records instead.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field


@dataclass
class DeliveryHistory:
    acked: dict[str, frozenset[str]] = field(default_factory=dict)  # notice -> recipients
    seen: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )  # recipient -> notice -> times handed to its application
    receipted: dict[str, frozenset[str]] = field(default_factory=dict)  # notice -> recipients

    def acknowledged(self, notice_id: str, recipients: frozenset[str]) -> None:
        self.acked[notice_id] = recipients

    def handed(self, recipient: str, notice_id: str) -> None:
        self.seen[recipient][notice_id] += 1

    def problems(self) -> list[str]:
        out = []
        for notice_id, recipients in sorted(self.acked.items()):
            for r in sorted(recipients):
                times = self.seen[r][notice_id]
                if times == 0:
                    out.append(f"{r}'s application never saw acknowledged notice {notice_id}")
                elif times > 1:
                    out.append(f"{r}'s application saw notice {notice_id} {times} times")
                if r not in self.receipted.get(notice_id, frozenset()):
                    out.append(f"notice {notice_id} to {r} is not receipted")
        for r, counts in sorted(self.seen.items()):
            for notice_id, times in sorted(counts.items()):
                if notice_id not in self.acked and times > 1:
                    out.append(f"{r}'s application saw unacknowledged {notice_id} {times} times")
        return out
