"""Prometheus metrics every service exports on /metrics (one process = one service)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# The probes and the scrape: many a minute, none a person's request. Never held back by
# admission control, never traced, never logged line by line.
OPERATIONS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

HTTP_REQUESTS = Counter(
    "holdspace_http_requests_total",
    "HTTP requests served",
    ["service", "method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "holdspace_http_request_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
HTTP_REFUSED = Counter(
    "holdspace_http_refused_total",
    "Requests answered 503 with Retry-After by admission control (shared/admission.py),"
    " by reason: queue_full (no place to wait), wait_timeout (no slot within the wait)",
    ["service", "reason"],
)
EVENTS_PUBLISHED = Counter(
    "holdspace_events_published_total", "Events confirmed by the broker", ["service", "type"]
)
EVENTS_CONSUMED = Counter(
    "holdspace_events_consumed_total",
    "Deliveries handled, by outcome (ok, retried, deferred, dead_lettered, unroutable)",
    ["service", "type", "outcome"],
)
ACCESS_REFUSED = Counter(
    "holdspace_access_refused_total",
    "Calls refused for want of a valid token (401) or of the role (403); each is also "
    "an 'access refused' audit line in the service's log",
    ["service", "status"],
)
EVENTS_REDELIVERED = Counter(
    "holdspace_events_redelivered_total",
    "Deliveries the broker marked redelivered (a consumer or its link went away before "
    "the ack); the inbox makes each a no-op when it was applied already",
    ["service", "type"],
)
EVENTS_RETRIED = Counter(
    "holdspace_events_retried_total", "Deliveries sent to a retry queue", ["service", "type"]
)
EVENTS_DEAD_LETTERED = Counter(
    "holdspace_events_dead_lettered_total",
    "Deliveries sent to the dead-letter queue",
    ["service", "type"],
)
PUBLISH_FAILURES = Counter(
    "holdspace_publish_failures_total",
    "Publishes that were returned, nacked or timed out",
    ["service", "type"],
)
HANDLER_LATENCY = Histogram(
    "holdspace_handler_seconds",
    "Event handler latency",
    ["service", "type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
OUTBOX_PENDING = Gauge(
    "holdspace_outbox_pending_events", "Events written but not yet published", ["service"]
)
OUTBOX_PARKED = Counter(
    "holdspace_outbox_parked_total",
    "Outbox events set aside because they cannot be opened or parsed (see ops outbox)",
    ["service"],
)
OUTBOX_LAG = Gauge(
    "holdspace_outbox_lag_seconds", "Age of the oldest unpublished event", ["service"]
)
DB_WRITES = Counter(
    "holdspace_db_writes_total", "Database write operations issued", ["service", "op"]
)
DB_COMMANDS = Counter(
    "holdspace_db_commands_total",
    "Database commands sent, by command name and collection (counted by the client:"
    " shared/mongo.py)",
    ["service", "command", "collection"],
)
JOBS_RUN = Counter(
    "holdspace_jobs_run_total", "Due-jobs run, by kind and outcome", ["service", "kind", "outcome"]
)
DELIVERIES = Counter(
    "holdspace_deliveries_total",
    "Notification deliveries by channel and status",
    ["service", "channel", "status"],
)
DELIVERIES_SENDING = Gauge(
    "holdspace_deliveries_sending",
    "Deliveries being sent now, after the event that caused them was acknowledged: work"
    " the queues no longer show",
    ["service"],
)
DELIVERIES_FAILED = Gauge(
    "holdspace_deliveries_failed", "Deliveries currently in the failed state", ["service"]
)
PAYMENT_MISMATCHES = Counter(
    "holdspace_payment_mismatches_total",
    "Payment notifications flagged for a coordinator",
    ["service", "kind"],
)
WRITE_CONFLICTS = Counter(
    "holdspace_write_conflicts_total",
    "Compare-and-set writes that lost to another writer and decided again",
    ["service", "collection"],
)
