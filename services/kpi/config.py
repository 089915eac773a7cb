"""KPI settings (env prefix `LEADFLOW_KPI_`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class KpiSettings(ServiceSettings):
    service_name: ClassVar[str] = "kpi"
    model_config = SettingsConfigDict(env_prefix="LEADFLOW_KPI_", extra="ignore")

    port: int = 8003
    # Events per live batch: larger batches fold a backlog a little faster but hold more in
    # memory at once (2,000: about 13 MB more at peak) and take the CPU in longer bursts.
    # With two batches in flight (below), 500 each hold what one batch of 1,000 held: two
    # of 1,000 took the process from 136 to 159 MB after a catch-up.
    consumer_max_records: int = Field(default=500, ge=1)
    # A live fetch waits for this many bytes of events or this many milliseconds, whichever
    # comes first. Dashboards poll every minute or so, so half a second of delay costs
    # nothing; fetching each new event on its own (the qualifier's way) made four times
    # the batches, each with its transaction, and took a core's tenth at 200 leads/s.
    consumer_fetch_max_wait_ms: int = Field(default=500, ge=0, le=5000)
    consumer_fetch_min_bytes: int = Field(default=1024 * 1024, ge=1)
    # The most one live fetch response holds (aiokafka's default: 50 MB). A backlog's
    # response of 1 MB for each of 18 partitions was read and decoded whole, the largest
    # thing the KPI's heap held while folding (bench.mem_peak kpi).
    consumer_fetch_max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # A batch's leads are folded in this many concurrent transactions.
    fold_parallelism: int = Field(default=2, ge=1, le=8)
    # Batches in flight: the next batch is fetched, decoded and folded while the last one's
    # transactions run. The fold's result does not depend on the order they commit in;
    # offsets are still committed in order. 2 folded a backlog 18 to 47% faster than 1 in
    # process (the machine had sat a third idle between batches), and
    # 5.6 million events at 5,399/s instead of 4,053; 3 gained no more.
    consumer_in_flight: int = Field(default=2, ge=1, le=8)
    # The longest period a read may ask for.
    max_range_days: int = Field(default=3 * 366, ge=1)
    # A grouped timeseries shows this many groups at most, those with the most behind its
    # first metric, and folds the rest into one "(other)" group: campaigns come from
    # anonymous form posts, so anyone can make thousands.
    timeseries_max_groups: int = Field(default=50, ge=1, le=1000)
    # Points (metric x bucket x group) an answer holds at most, about 3 MB of JSON: a series
    # whose buckets times metrics pass it is refused (422); a grouped one leaves empty cells
    # out, then shows fewer groups.
    timeseries_max_points: int = Field(default=20_000, ge=100, le=1_000_000)
    # The deployment's one currency: payments in another are parked, not summed.
    currency: str = Field(default="RUB", pattern=r"^[A-Z]{3}$")
    # Rebuild: events per read, and how often an idle process looks for a rebuild
    # that another replica was asked to start.
    rebuild_max_records: int = Field(default=2000, ge=1)
    rebuild_poll_seconds: float = Field(default=5.0, gt=0)
    # Events a rebuild folds in memory before writing them (fold/window.py): each lead is
    # then written once per window, not once per read. 10,000 and 20,000 rebuilt at the same
    # rate (8,381 and 7,967 events/s); 10,000 peaked at 191 MB against 218. 5,000: the quick
    # bench's KPI at 141-142 MB after a rebuild against 150-151 at 10,000, in the same time
    # (docs/benchmarks.md, round 11).
    rebuild_window_events: int = Field(default=5_000, ge=1)
    # A rebuild stages its aggregate increments and adds them in one statement, beside the
    # next windows, once this many are staged, and the rest at the switch
    # (store/writes.compact_fact_deltas).
    rebuild_compact_deltas: int = Field(default=200_000, ge=1)
    # How long a retired generation's rows stay (reads begun before a switch finish on them).
    retired_grace_seconds: float = Field(default=60.0, ge=0)
