"""Every Prometheus metric the kit exposes, declared in one place.

Names follow Prometheus conventions: ``refund_ledger_`` prefix, ``_total``
counters, ``_seconds`` histograms, low-cardinality labels (never an ID).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)

EVENTS_CONSUMED = Counter(
    "refund_ledger_events_consumed_total", "Kafka records handed to the ingress.", ["topic"])
EVENTS_APPLIED = Counter(
    "refund_ledger_events_applied_total", "Inbound events applied to the domain.", ["topic", "type"])
EVENTS_REJECTED = Counter(
    "refund_ledger_events_rejected_total", "Inbound events rejected, by reason code.",
    ["topic", "reason_code"])
EVENTS_DUPLICATE = Counter(
    "refund_ledger_events_duplicate_total",
    "Inbound records recognised as already applied (kind=offset: redelivered record; "
    "kind=event_id: same CloudEvent id re-sent).", ["topic", "kind"])
EVENTS_PASSED_OVER = Counter(
    "refund_ledger_events_passed_over_total",
    "Ledger events on a followed topic whose type this service has no use for.", ["topic", "type"])
TIMERS_FIRED = Counter(
    "refund_ledger_timers_fired_total", "Durable timers (deadlines) that came due and were acted on.", ["timer"])
BATCH_SECONDS = Histogram(
    "refund_ledger_batch_processing_seconds", "Time to apply one ingress batch in one transaction.",
    buckets=_LATENCY_BUCKETS)
BATCH_SIZE = Histogram(
    "refund_ledger_batch_size_messages", "Records per ingress batch.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500))
EVENT_LAG = Histogram(
    "refund_ledger_event_lag_seconds", "From the event's own time to applied (end-to-end lag).",
    ["topic"], buckets=_LAG_BUCKETS)
INGRESS_RETRIES = Counter(
    "refund_ledger_ingress_retries_total", "Batches retried after a database or conflict error.",
    ["reason"])
OUTBOX_BACKLOG = Gauge(
    "refund_ledger_outbox_backlog_events", "Events saved but not yet published by the relay.")
OUTBOX_PUBLISHED = Counter(
    "refund_ledger_outbox_published_total", "Events the relay published, per topic.", ["topic"])
DEPENDENCY_UP = Gauge(
    "refund_ledger_dependency_up", "1 when the dependency answered its last check.", ["dependency"])
PROJECTION_APPLIED = Counter(
    "refund_ledger_projection_applied_total", "Ledger events applied to the audit read model.",
    ["topic", "type"])
HTTP_REQUESTS = Counter(
    "refund_ledger_http_requests_total", "Audit API requests.", ["route", "method", "status"])
HTTP_LATENCY = Histogram(
    "refund_ledger_http_request_duration_seconds", "Audit API latency.", ["route", "method"],
    buckets=_LATENCY_BUCKETS)
ACCESS_AUDIT_RECORDS = Counter(
    "refund_ledger_access_audit_records_total", "Access-audit records written by the audit API.")
CONSUMER_LAG = Gauge(
    "refund_ledger_consumer_lag_messages",
    "Records on a partition not yet applied (high-water mark minus the next offset to apply).",
    ["topic", "partition"])
# From the audit read model (refreshed periodically by the audit service).
REFUNDS = Gauge("refund_ledger_refunds", "Refund cases by state and route.", ["state", "route"])
REFUNDS_OVERDUE = Gauge("refund_ledger_refunds_overdue", "Open refund cases past their deadline.", ["agency"])
UNREFLECTED_PAYMENTS = Gauge("refund_ledger_unreflected_payments",
                             "Payments no agency system acknowledged in time (still open).")
STATUS_MISMATCHES = Gauge("refund_ledger_status_mismatches",
                          "Visas whose status says fees restored with no bank completion by the deadline.")
SLA_BREACHES = Counter("refund_ledger_sla_breaches_total",
                       "Refund cases that went past their deadline, by route and the agency charged.",
                       ["route", "owner"])
# The notifier's deliveries, per channel (email, sms, webhook).
NOTIFICATIONS_SENT = Counter("refund_ledger_notifications_sent_total", "Messages delivered.", ["channel"])
NOTIFICATIONS_FAILED = Counter("refund_ledger_notifications_failed_total", "Delivery attempts that failed.",
                               ["channel"])
NOTIFICATIONS_PENDING = Gauge("refund_ledger_notifications_pending", "Messages waiting to be delivered.",
                              ["channel"])
NOTIFICATIONS_DEAD = Counter("refund_ledger_notifications_dead_lettered_total",
                             "Messages that will not be delivered, by channel (none: no channel could be used) "
                             "and why: retries_exhausted, refused, no_contact, channel_not_configured, missing_fact.",
                             ["channel", "reason"])
