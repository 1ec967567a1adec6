"""An asynchronous federation on the simulated clock (``scenario.asynchrony``; the maths is
``fedsim.core.asynchrony``).

Events, not rounds: at most ``concurrency`` devices train at once. Whenever a slot is free, devices
online and idle at that simulated moment are drawn (seeded) and start from the model version
current then: each is planned by the cost model (download, compute, upload; a dropout when its
online spell ends first) and trained at once by the same transports as a round (per-device or
cohort), so what it sends is fixed when it starts. Its *arrival* is the end of its plan. Arrivals
are processed in simulated-time order, ties broken by device id; a failed or dropped device frees
its slot and sends nothing. FedBuff applies an update every ``buffer_size`` arrivals, FedAsync at
every arrival; each update is one line of ``rounds.jsonl`` with the staleness of what it applied,
and the devices that finished since the last one are its rows of ``devices.csv``.

Energy is each device's work (transfers and compute; a dropped device until it dropped), not
idle time, which in an asynchronous run belongs to no round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from devices.clock import EMPTY_ROUND_S, DevicePlan
from fedsim.core.asynchrony import Arrival, fedasync_update, fedbuff_update, staleness_weight
from fedsim.core.cohort import DeviceOutcome
from fedsim.core.errors import FedsimError
from fedsim.core.records import DeviceRecord, RoundRecord
from fedsim.core.reduce import Arrays
from fedsim.core.seeds import derive_seed
from server.checks import check_global
from server.dispatch import RoundContext, Work, work_payload
from server.outputs import sig
from server.tally import Scores
from server.tiers import tiered_round

__all__ = ["AsyncServer"]

# a fleet with nobody online is waited for in steps of EMPTY_ROUND_S, this many at most
MAX_EMPTY_WAITS = 10_000


@dataclass
class Job:
    """One device's work from its start to its arrival."""

    index: int  # 1, 2, ...: the server round its device is told (seeds its local training)
    plan: DevicePlan
    start_s: float
    version: int
    start: Arrays
    arrays: Arrays | None = None  # what it sends, once trained (None: dropout or failure)
    outcome: DeviceOutcome | None = None

    @property
    def device_id(self) -> int:
        return self.plan.device_id

    @property
    def end_s(self) -> float:
        return self.start_s + self.plan.busy_s

    @property
    def delivered(self) -> bool:
        return self.arrays is not None


@dataclass
class AsyncServer:
    """The server's side of an asynchronous run: ``update(n)`` runs the clock to the n-th
    server update and returns its records."""

    ctx: RoundContext
    version: int = 0
    jobs: int = 0
    fills: int = 0
    in_flight: dict[int, Job] = field(default_factory=dict)
    buffer: list[Job] = field(default_factory=list)

    def update(self, round_: int) -> tuple[RoundRecord, list[DeviceRecord], Scores | None]:
        """Run events until the next server update; its record and its devices' rows (the
        caller evaluates and fills in the scores)."""
        ctx, spec = self.ctx, self.ctx.scenario.asynchrony
        assert spec is not None
        k = spec.buffer_size if spec.strategy == "fedbuff" else 1
        started_at = ctx.clock
        ended: list[Job] = []
        started = waits = 0
        while True:
            started += self._fill()
            if not self.in_flight:  # nobody online and idle: wait for someone
                waits += 1
                if waits > MAX_EMPTY_WAITS:
                    raise FedsimError(
                        "asynchrony",
                        f"no device could start for {MAX_EMPTY_WAITS * EMPTY_ROUND_S:,.0f} "
                        "simulated seconds (offline, or too little memory to train)",
                        "check the fleet's availability and memory (fedsim validate)",
                    )
                ctx.clock += EMPTY_ROUND_S
                continue
            job = min(self.in_flight.values(), key=lambda j: (j.end_s, j.device_id))
            ctx.clock = max(ctx.clock, job.end_s)
            del self.in_flight[job.device_id]
            ended.append(job)
            if job.delivered:
                self.buffer.append(job)
            if len(self.buffer) >= k:
                break
        staleness = self._apply(k)
        devices = [self._device_record(round_, job) for job in ended]
        return self._record(round_, started, ended, devices, started_at, staleness), devices, None

    def _fill(self) -> int:
        """Start devices in the free slots at the current simulated time; how many started."""
        ctx, spec = self.ctx, self.ctx.scenario.asynchrony
        assert spec is not None
        free = spec.concurrency - len(self.in_flight)
        if free <= 0:
            return 0
        online = ctx.costs.available(ctx.clock)
        candidates = [
            d
            for d in range(len(ctx.fleet))
            if (online is None or online[d])
            and d not in self.in_flight
            and ctx.costs.scope(d) != "skip"
        ]
        if not candidates:
            return 0
        self.fills += 1
        rng = np.random.default_rng(derive_seed(ctx.scenario.seed, "async-select", self.fills))
        size = min(free, len(candidates))
        chosen = sorted(int(d) for d in rng.choice(candidates, size=size, replace=False))
        for plan in ctx.costs.plan(chosen, ctx.clock, self.jobs + 1):
            self.jobs += 1
            job = Job(self.jobs, plan, ctx.clock, self.version, ctx.global_arrays)
            if plan.fate == "train":
                self._train(job)
            self.in_flight[plan.device_id] = job
        return len(chosen)

    def _train(self, job: Job) -> None:
        """Train the job's device now, from the current version (one device per message)."""
        ctx = self.ctx
        d = job.device_id
        work = Work(
            round=job.index,
            devices=[d],
            head_only=frozenset([d]) if job.plan.scope == "head" else frozenset(),
            payload=work_payload(ctx),
            bytes_up={d: job.plan.bytes_up},
            sent={d: ctx.costs.sent(d)},
        )
        partial, outcomes, _ = tiered_round(ctx, work)
        job.outcome = next((o for o in outcomes if o.device_id == d), None)
        if job.outcome is not None and job.outcome.status == "ok":
            job.arrays = ctx.aggregator.finalize(job.start, partial)

    def _apply(self, k: int) -> list[int]:
        """Fold the first ``k`` buffered arrivals into the global model; their staleness."""
        ctx, spec = self.ctx, self.ctx.scenario.asynchrony
        assert spec is not None
        applied, self.buffer = self.buffer[:k], self.buffer[k:]
        weighting = spec.staleness
        taus = [self.version - job.version for job in applied]
        arrivals = [
            Arrival(
                job.arrays or [],
                job.start,
                staleness_weight(tau, weighting.kind, weighting.a, weighting.b),
            )
            for job, tau in zip(applied, taus, strict=True)
        ]
        if spec.strategy == "fedbuff":
            ctx.global_arrays = fedbuff_update(ctx.global_arrays, arrivals, spec.server_lr)
        else:
            ctx.global_arrays = fedasync_update(ctx.global_arrays, arrivals[0], spec.server_lr)
        self.version += 1
        names = tuple(ctx.model.state_dict())
        check_global(
            names, ctx.global_arrays, self.version, [j.outcome for j in applied if j.outcome]
        )
        return taus

    def _energy(self, job: Job) -> tuple[float, float]:
        """The job's energy (mJ) and busy seconds: its transfers and compute, no idle."""
        plan, device = job.plan, self.ctx.fleet[job.device_id]
        activity = plan.activity(plan.busy_s, job.delivered)
        mj = self.ctx.costs.model.energy.millijoules(device.profile, device.link, activity)
        return mj, activity.compute_s + activity.down_s + activity.up_s

    def _device_record(self, round_: int, job: Job) -> DeviceRecord:
        outcome = job.outcome or DeviceOutcome(job.device_id, job.plan.fate)  # type: ignore[arg-type]
        mj, busy = self._energy(job)
        return DeviceRecord(
            round=round_,
            device_id=job.device_id,
            profile=self.ctx.fleet[job.device_id].profile.name,
            status=outcome.status,
            num_examples=outcome.num_examples,
            train_loss=outcome.train_loss,
            bytes_down=job.plan.bytes_down,
            bytes_up=job.plan.bytes_up if job.delivered else 0,
            error=outcome.error,
            scope=job.plan.scope,
            busy_s=sig(busy),
            energy_mj=sig(mj),
            measured_s=outcome.measured_s,
            measured_mj=outcome.measured_mj,
        )

    def _record(
        self,
        round_: int,
        started: int,
        ended: list[Job],
        devices: list[DeviceRecord],
        started_at: float,
        staleness: list[int],
    ) -> RoundRecord:
        ok = [d for d in devices if d.status == "ok"]
        examples = sum(d.num_examples for d in ok)
        online = self.ctx.costs.available(self.ctx.clock)
        return RoundRecord(
            round=round_,
            selected=started,
            participants=len(staleness),
            failures=sum(d.status in ("failed", "no-reply") for d in devices),
            accuracy=None,
            loss=None,
            train_loss=(
                sum((d.train_loss or 0.0) * d.num_examples for d in ok) / examples
                if examples
                else None
            ),
            bytes_down=sum(d.bytes_down for d in devices),
            bytes_up=sum(d.bytes_up for d in devices),
            round_s=sig(self.ctx.clock - started_at),
            sim_time_s=sig(self.ctx.clock),
            energy_mj=sig(math.fsum(d.energy_mj for d in devices)),
            offline=0 if online is None else int(len(online) - online.sum()),
            # devices that can never train here (too little memory): never drawn, counted
            memory_skips=sum(self.ctx.costs.scope(d) == "skip" for d in range(len(self.ctx.fleet))),
            head_only=sum(j.delivered and j.plan.scope == "head" for j in ended),
            dropouts=sum(j.plan.fate == "dropout" for j in ended),
            staleness=staleness,
        )
