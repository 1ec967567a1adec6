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
idle time, which in an asynchronous run belongs to no round. The devices still training at an
update are summed in its ``in_flight`` (bytes downloaded and energy drawn so far); their rows come
when they finish. A free slot is also filled when an idle device comes online (the availability
model says when), not only at arrivals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from devices.clock import DevicePlan
from devices.cost import Activity
from fedsim.core.asynchrony import Arrival, fedasync_update, fedbuff_update, staleness_weight
from fedsim.core.cohort import DeviceOutcome
from fedsim.core.errors import RunStoppedError
from fedsim.core.records import DeviceRecord, DeviceStatus, RoundRecord
from fedsim.core.reduce import Arrays
from fedsim.core.seeds import derive_seed
from server.checks import check_global
from server.dispatch import RoundContext, Work, work_payload
from server.outputs import sig
from server.tally import Scores
from server.tiers import tiered_round

__all__ = ["AsyncServer"]

# a run stops when this many device jobs in a row (at least; 100 per training slot) deliver nothing
MAX_FRUITLESS_JOBS = 1_000


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
    fruitless: int = 0  # device jobs in a row that delivered nothing

    def update(self, round_: int) -> tuple[RoundRecord, list[DeviceRecord], Scores | None]:
        """Run events until the next server update; its record and its devices' rows (the
        caller evaluates and fills in the scores).

        Events: a device arrives (the earliest, ties by device id), or, with a slot free, an idle
        device comes online. A run where nothing ever arrives again stops with an error."""
        ctx, spec = self.ctx, self.ctx.scenario.asynchrony
        assert spec is not None
        k = spec.buffer_size if spec.strategy == "fedbuff" else 1
        started_at = ctx.clock
        ended: list[Job] = []
        started = 0
        while True:
            wake = math.inf
            if len(self.in_flight) < spec.concurrency:
                online, offline = self._idle()
                started += self._fill(online)
                if len(self.in_flight) < spec.concurrency:  # a slot is still free
                    wake = ctx.costs.next_online(offline, ctx.clock)
            arrival = min((j.end_s for j in self.in_flight.values()), default=math.inf)
            if wake < arrival:  # someone comes online while a slot is free
                after = math.nextafter(ctx.clock, math.inf)
                ctx.clock = wake if wake > ctx.clock else after
                continue
            if math.isinf(arrival):
                raise RunStoppedError(
                    "no-updates",
                    f"{round_ - 1} server updates",
                    f"at {ctx.clock:.6g} simulated s no device is training and none will come "
                    "online again",
                    "check the fleet's availability and memory (fedsim validate)",
                )
            job = min(self.in_flight.values(), key=lambda j: (j.end_s, j.device_id))
            ctx.clock = max(ctx.clock, job.end_s)
            del self.in_flight[job.device_id]
            ended.append(job)
            self.fruitless = 0 if job.delivered else self.fruitless + 1
            if self.fruitless >= max(MAX_FRUITLESS_JOBS, 100 * spec.concurrency):
                statuses = sorted({(j.outcome.status if j.outcome else j.plan.fate) for j in ended})
                raise RunStoppedError(
                    "no-updates",
                    f"{round_ - 1} server updates",
                    f"the last {self.fruitless} device jobs delivered nothing "
                    f"({', '.join(statuses)})",
                    "see the status and error columns of devices.csv; fedsim validate",
                )
            if job.delivered:
                self.buffer.append(job)
            if len(self.buffer) >= k:
                break
        staleness = self._apply(k)
        devices = [self._device_record(round_, job) for job in ended]
        record = self._record(round_, started, ended, devices, started_at, staleness)
        return record, devices, None

    def _idle(self) -> tuple[list[int], list[int]]:
        """The devices not training that could (memory permitting): online now, and offline."""
        ctx = self.ctx
        mask = ctx.costs.available(ctx.clock)
        online: list[int] = []
        offline: list[int] = []
        for d in range(len(ctx.fleet)):
            if d not in self.in_flight and ctx.costs.scope(d) != "skip":
                (online if mask is None or mask[d] else offline).append(d)
        return online, offline

    def _fill(self, candidates: list[int]) -> int:
        """Start devices of ``candidates`` (online and idle) in the free slots at the current
        simulated time; how many started."""
        ctx, spec = self.ctx, self.ctx.scenario.asynchrony
        assert spec is not None
        free = spec.concurrency - len(self.in_flight)
        if free <= 0 or not candidates:
            return 0
        self.fills += 1
        rng = np.random.default_rng(derive_seed(ctx.scenario.seed, "async-select", self.fills))
        size = min(free, len(candidates))
        chosen = sorted(int(d) for d in rng.choice(candidates, size=size, replace=False))
        for d in chosen:
            self.jobs += 1
            (plan,) = ctx.costs.plan([d], ctx.clock, self.jobs)  # its own job's data (missions)
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
                ctx.costs.sent(job.device_id),  # a head-only device updates its head only
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
        fate: DeviceStatus = "dropout" if job.plan.fate == "dropout" else "no-reply"
        outcome = job.outcome or DeviceOutcome(job.device_id, fate)  # no outcome: no reply
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
            # devices that can never train here (too little memory): never drawn; counted once
            memory_skips=0
            if round_ > 1
            else sum(self.ctx.costs.scope(d) == "skip" for d in range(len(self.ctx.fleet))),
            head_only=sum(j.delivered and j.plan.scope == "head" for j in ended),
            dropouts=sum(j.plan.fate == "dropout" for j in ended),
            staleness=staleness,
            in_flight=self._in_flight_so_far(),
        )

    def _in_flight_so_far(self) -> dict[str, float]:
        """The devices still training now: how many, bytes downloaded and energy drawn so far."""
        ctx = self.ctx
        nbytes = energy = idle = 0.0
        for job in self.in_flight.values():
            plan, device = job.plan, ctx.fleet[job.device_id]
            elapsed = min(ctx.clock - job.start_s, plan.busy_s)
            down = min(plan.down_s, elapsed)
            compute = min(plan.compute_s, elapsed - down)
            up = min(plan.up_s, elapsed - down - compute)
            share = down / plan.down_s if plan.down_s > 0 else 1.0
            nbytes += plan.bytes_down * share
            activity = Activity(compute, down, up, 0.0)
            energy += ctx.costs.model.energy.millijoules(device.profile, device.link, activity)
            idle += device.profile.idle_mw * (down + compute + up)
        return {
            "devices": len(self.in_flight),
            "bytes_down": sig(nbytes),
            "energy_mj": sig(energy),
            "idle_mj": sig(idle),  # what idling would have drawn meanwhile (energy above it: work)
        }
