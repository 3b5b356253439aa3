"""The bench's settings: the workload's shape and each mode's size (full and --quick)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from broker.errors import InvalidArgument
from broker.sandbox import AgencySpec

PUBLISHERS = ("FR-NCB", "LU-NCB", "IE-NCB", "MT-NCB")  # National Central Bureaus
# Police authorities of INTERPOL and EU members: the shipped policy lets each read all
# three sections of an INTERPOL Red notice (identity, case facts, judicial).
_COUNTRIES = (
    "DE", "IT", "ES", "NL", "BE", "AT", "PL", "SE", "PT", "CZ", "DK", "FI", "GR", "HU",
    "IE", "RO", "SK", "SI", "HR", "BG", "LT", "LV", "EE", "LU", "MT", "CY",
)  # fmt: skip
_PURPOSES = ("locate_arrest", "locate_missing", "identification", "investigation")
MODES = ("closed", "paced", "soak", "backlog", "capacity")
PEERS = ("nats", "rabbitmq")


@dataclass(frozen=True)
class BenchConfig:
    recipients: int = 10  # recipients per notice
    publishers: int = 1  # publisher processes (one agency each), sharing the load
    recipient_procs: int = 2  # worker processes the recipients are spread over
    concurrency: int = 16  # publishes in flight (closed loop)
    batch: int = 8  # notices per publish call (AgencyNode.publish_many)
    window: int = 64  # credit window / prefetch / max unacknowledged, per recipient
    closed_seconds: float = 20.0
    rates: tuple[float, ...] = (25.0, 100.0)
    paced_seconds: float = 20.0
    soak_seconds: float = 600.0
    soak_rate: float = 25.0
    backlog: int = 100_000  # deliveries queued for the offline recipient
    backlog_drain_seconds: float = 600.0  # the drain is measured for at most this long
    # Sealed ahead, to every recipient; few enough that the last is published well within
    # the broker's 5-minute clock-skew window of its sealing.
    capacity_notices: int = 5_000
    capacity_batch: int = 32  # envelopes per Publish (backlog fill and capacity)
    capacity_concurrency: int = 4
    confirm_seconds: float = 10.0  # RabbitMQ confirmed publishes
    confirm_in_flight: int = 256
    drain_timeout_s: float = 60.0  # give up waiting once no receipt came for this long
    modes: tuple[str, ...] = MODES
    peers: tuple[str, ...] = PEERS
    require_peers: bool = False  # an unreachable peer is an error, not a skip (tests, CI)
    nats_url: str = "nats://127.0.0.1:4222"
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    scratch: Path | None = None
    quick: bool = False
    notes: tuple[str, ...] = field(default=())
    suite: str = "classical"  # our envelope suite: classical | hybrid (docs/post-quantum.md)

    def check(self) -> BenchConfig:
        """Return self, or raise InvalidArgument naming the setting to fix."""
        if not 1 <= self.recipients <= len(_COUNTRIES):
            raise InvalidArgument(f"--recipients must be 1 to {len(_COUNTRIES)}")
        if not 1 <= self.publishers <= len(PUBLISHERS):
            raise InvalidArgument(f"--publishers must be 1 to {len(PUBLISHERS)}")
        if not 1 <= self.recipient_procs <= self.recipients:
            raise InvalidArgument("--recipient-procs must be 1 to the number of recipients")
        if self.concurrency < 1 or self.batch < 1 or self.window < 1:
            raise InvalidArgument("--concurrency, --batch and --window must be at least 1")
        if self.closed_seconds <= 0 or self.paced_seconds <= 0 or self.soak_seconds <= 0:
            raise InvalidArgument("every duration must be positive")
        if any(r <= 0 for r in self.rates) or self.soak_rate <= 0:
            raise InvalidArgument("rates must be positive notices per second")
        if self.backlog < 1 or self.capacity_notices < 1 or self.backlog_drain_seconds <= 0:
            raise InvalidArgument(
                "--backlog and --capacity-notices must be at least 1, --backlog-drain-seconds "
                "positive"
            )
        if not 1 <= self.capacity_batch <= 64:
            raise InvalidArgument("--capacity-batch must be 1 to 64 (the broker's batch limit)")
        unknown = sorted(set(self.modes) - set(MODES)) + sorted(set(self.peers) - set(PEERS))
        if unknown:
            raise InvalidArgument(f"unknown mode or peer {unknown}; modes {MODES}, peers {PEERS}")
        return self

    def recipient_ids(self) -> list[str]:
        return [f"{c}-POL" for c in _COUNTRIES[: self.recipients]]

    def publisher_ids(self) -> list[str]:
        return list(PUBLISHERS[: self.publishers])

    def agencies(self) -> tuple[AgencySpec, ...]:
        specs = [
            AgencySpec(p, p[:2], ("ncb", "police"), "bench publisher", (), _PURPOSES)
            for p in self.publisher_ids()
        ]
        specs += [
            AgencySpec(r, r[:2], ("police",), "bench recipient", (), _PURPOSES)
            for r in self.recipient_ids()
        ]
        return tuple(specs)

    def chunks(self) -> list[list[str]]:
        """The recipients, spread over the recipient worker processes."""
        ids = self.recipient_ids()
        return [ids[i :: self.recipient_procs] for i in range(self.recipient_procs)]


QUICK = {
    "closed_seconds": 1.0,
    "paced_seconds": 0.6,
    "soak_seconds": 1.0,
    "backlog": 200,
    "backlog_drain_seconds": 30.0,
    "capacity_notices": 100,
    "confirm_seconds": 1.0,
    "drain_timeout_s": 20.0,
    "quick": True,
}


def quick(config: BenchConfig) -> BenchConfig:
    """The --quick sizes (the whole command, peers included, in under a minute)."""
    return replace(config, **QUICK)  # type: ignore[arg-type]
