-- The audit read model. Everything here can be rebuilt from the ledger topics
-- (and those from the services' event stores): no table is a source of truth.
CREATE SCHEMA IF NOT EXISTS audit;

-- Every ledger event ever projected: the timeline, and the idempotency key.
CREATE TABLE IF NOT EXISTS audit.ledger_events (
    event_id       text PRIMARY KEY,          -- outbound CloudEvent id: <aggregate>:<version>
    topic          text NOT NULL,
    type           text NOT NULL,
    source         text NOT NULL,             -- the ledger service that published it
    origin_source  text,                      -- who told the ledger (bank/80, nic, musaned, ...)
    origin_id      text,
    origin_type    text,
    subject        text,
    beneficiary_id text,
    payment_id     text,
    refund_id      text,
    visa_key       text,                      -- sponsor_id/export_number/serial_number
    occurred_at    timestamptz NOT NULL,      -- when it happened
    recorded_at    timestamptz NOT NULL,      -- when the ledger recorded it
    projected_at   timestamptz NOT NULL DEFAULT now(),
    data           jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_events_payment ON audit.ledger_events (payment_id, occurred_at)
    WHERE payment_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS ledger_events_refund ON audit.ledger_events (refund_id, occurred_at)
    WHERE refund_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS ledger_events_visa ON audit.ledger_events (visa_key, occurred_at)
    WHERE visa_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS ledger_events_beneficiary ON audit.ledger_events (beneficiary_id, occurred_at)
    WHERE beneficiary_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS audit.payments (
    payment_id        text PRIMARY KEY,
    beneficiary_id    text NOT NULL,
    payer_id          text NOT NULL,
    payer_iban        text NOT NULL,
    agency            text NOT NULL,
    service_code      text NOT NULL,
    amount            bigint NOT NULL CHECK (amount > 0),
    currency          text NOT NULL,
    channel           text NOT NULL,
    bank_code         text NOT NULL,
    third_party_payer boolean NOT NULL,
    paid_at           timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL,
    acknowledged_at   timestamptz,
    refund_state      text NOT NULL DEFAULT 'NONE',
    refunded_at       timestamptz,
    unreflected_since timestamptz,            -- not acknowledged in time (NULL once resolved)
    unreflected_resolved_at timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS payments_beneficiary ON audit.payments (beneficiary_id, paid_at DESC);
CREATE INDEX IF NOT EXISTS payments_unreflected ON audit.payments (unreflected_since)
    WHERE unreflected_since IS NOT NULL;

-- One row per refund case, whatever its origin (bank, Absher, visa cancellation).
CREATE TABLE IF NOT EXISTS audit.refunds (
    refund_id        text PRIMARY KEY,
    beneficiary_id   text NOT NULL,
    agency           text NOT NULL,
    service_code     text NOT NULL,
    amount           bigint NOT NULL CHECK (amount > 0),
    iban             text NOT NULL,
    bank_code        text NOT NULL,
    channel          text NOT NULL,
    route            text NOT NULL,
    state            text NOT NULL,
    route_owner      text NOT NULL,
    rules_version    text NOT NULL,
    third_party_payer boolean NOT NULL DEFAULT false,
    reference        jsonb NOT NULL DEFAULT '{}',
    payment_id       text,
    visa_key         text,
    requested_at     timestamptz NOT NULL,
    deadline         timestamptz NOT NULL,
    ordered_at       timestamptz,
    decided_by       text,
    decided_at       timestamptz,
    rejection_rule   text,
    rejection_reason text,
    bank_reference   text,
    completed_at     timestamptz,
    completed_on_time boolean,
    failed_at        timestamptz,
    failure_reason   text,
    overdue          boolean NOT NULL DEFAULT false,
    overdue_at       timestamptz,
    overdue_owner    text,
    version          integer NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS refunds_state_deadline ON audit.refunds (state, deadline, refund_id);
CREATE INDEX IF NOT EXISTS refunds_overdue ON audit.refunds (deadline, refund_id) WHERE overdue;
CREATE INDEX IF NOT EXISTS refunds_route ON audit.refunds (route, state, requested_at);
CREATE INDEX IF NOT EXISTS refunds_agency ON audit.refunds (agency, requested_at);
CREATE INDEX IF NOT EXISTS refunds_requested ON audit.refunds (requested_at, refund_id);
CREATE INDEX IF NOT EXISTS refunds_beneficiary ON audit.refunds (beneficiary_id, requested_at DESC);
CREATE INDEX IF NOT EXISTS refunds_visa ON audit.refunds (visa_key) WHERE visa_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS audit.balances (
    beneficiary_id text NOT NULL,
    agency         text NOT NULL,
    service_code   text NOT NULL,
    credited       bigint NOT NULL,
    charged        bigint NOT NULL,
    held           bigint NOT NULL,
    refunded       bigint NOT NULL,
    available      bigint NOT NULL CHECK (available >= 0),
    version        integer NOT NULL,          -- the balance aggregate's version: newest wins
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (beneficiary_id, agency, service_code)
);

CREATE TABLE IF NOT EXISTS audit.rejections (
    event_id     text PRIMARY KEY,
    rejected_by  text NOT NULL,
    reason_code  text NOT NULL,
    reason       text NOT NULL,
    topic        text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    original_event_id text,
    original_source   text,
    original_type     text,
    rejected_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS rejections_time ON audit.rejections (rejected_at DESC);

-- Ledger messages the projection could not read: kept, never dropped.
CREATE TABLE IF NOT EXISTS audit.projection_errors (
    topic text NOT NULL, kafka_partition integer NOT NULL, kafka_offset bigint NOT NULL,
    error text NOT NULL, raw bytea, at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);

-- One row per visa (sponsor, export number, serial number) and its cancellation.
CREATE TABLE IF NOT EXISTS audit.visas (
    visa_key           text PRIMARY KEY,        -- sponsor_id/export_number/serial_number
    sponsor_id         text NOT NULL,
    export_number      text NOT NULL,
    serial_number      text NOT NULL,
    visa_type          text,
    payment_id         text,
    fee                bigint,
    issued_at          timestamptz,
    cancellation_requested_at timestamptz,
    cancellation_channel text,
    cancelled_at       timestamptz,             -- Musaned accepted the cancellation
    route              text,
    route_rule         text,
    route_reason       text,
    rules_version      text,
    hours_since_issue  double precision,
    status             text,
    status_changed_at  timestamptz,
    status_mismatch_at timestamptz,             -- fees restored, no bank completion by the deadline
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS visas_sponsor ON audit.visas (sponsor_id);
CREATE INDEX IF NOT EXISTS visas_mismatch ON audit.visas (status_mismatch_at) WHERE status_mismatch_at IS NOT NULL;

-- Who looked at what: every audit API request under /api/v1 (append-only; admin reads it).
CREATE TABLE IF NOT EXISTS audit.access_log (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    subject   text,                            -- the token's subject; NULL when no valid token was given
    role      text,
    method    text NOT NULL,
    path      text NOT NULL,                   -- the path as requested (it names the case looked at)
    filters   jsonb NOT NULL DEFAULT '{}',     -- the query parameters
    status    integer NOT NULL,
    rows      integer NOT NULL
);
CREATE INDEX IF NOT EXISTS access_log_subject ON audit.access_log (subject, at DESC);
CREATE INDEX IF NOT EXISTS access_log_path ON audit.access_log (path, at DESC);
CREATE OR REPLACE FUNCTION audit.access_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.access_log is append-only';
END $$;
DROP TRIGGER IF EXISTS access_log_append_only ON audit.access_log;
CREATE TRIGGER access_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit.access_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit.access_log_is_append_only();

-- Search keys a citizen can read out (exact matches).
CREATE INDEX IF NOT EXISTS payments_payer_iban ON audit.payments (payer_iban);
CREATE INDEX IF NOT EXISTS payments_payer ON audit.payments (payer_id);
CREATE INDEX IF NOT EXISTS refunds_iban ON audit.refunds (iban);
CREATE INDEX IF NOT EXISTS refunds_bank_reference ON audit.refunds (bank_reference) WHERE bank_reference IS NOT NULL;

-- Four eyes: the first approval of a refund above the rules' amount (the maker), until a different checker approves.
ALTER TABLE audit.refunds ADD COLUMN IF NOT EXISTS first_approved_by text;
ALTER TABLE audit.refunds ADD COLUMN IF NOT EXISTS first_approved_at timestamptz;

-- The SADAD bill number of a payment made through SADAD (a key the citizen reads off the bill).
ALTER TABLE audit.payments ADD COLUMN IF NOT EXISTS sadad_bill_number text;
CREATE INDEX IF NOT EXISTS payments_sadad_bill ON audit.payments (sadad_bill_number)
    WHERE sadad_bill_number IS NOT NULL;

-- Personal data at rest (services/kit/pii.py): with CIPHER_KEY set, payer_iban / iban hold
-- AES-GCM ciphertext (enc:v1:...) and an IBAN search compares these keyed hashes (kh:...) instead;
-- without a key they stay NULL and the search uses the clear columns above.
ALTER TABLE audit.payments ADD COLUMN IF NOT EXISTS payer_iban_hash text;
ALTER TABLE audit.refunds ADD COLUMN IF NOT EXISTS iban_hash text;
CREATE INDEX IF NOT EXISTS payments_payer_iban_hash ON audit.payments (payer_iban_hash)
    WHERE payer_iban_hash IS NOT NULL;
CREATE INDEX IF NOT EXISTS refunds_iban_hash ON audit.refunds (iban_hash) WHERE iban_hash IS NOT NULL;
