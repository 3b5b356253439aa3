"""Versioned schema migrations. Append only: never edit a released step."""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: registry, notices, deliveries, receipts, events
    """
    CREATE TABLE agencies (
        id TEXT PRIMARY KEY,
        country TEXT NOT NULL,
        roles TEXT NOT NULL,
        groups_ TEXT NOT NULL,
        purposes TEXT NOT NULL,
        status TEXT NOT NULL,
        statement BLOB NOT NULL,
        signing_key BLOB NOT NULL,
        encryption_key BLOB NOT NULL,
        serial INTEGER NOT NULL
    );
    CREATE TABLE notices (
        notice_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        originator TEXT NOT NULL,
        kind TEXT NOT NULL,
        header_digest BLOB NOT NULL,
        envelope_digest BLOB NOT NULL,
        envelope BLOB NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        accepted_at_ms INTEGER NOT NULL,
        policy_version TEXT NOT NULL,
        decisions TEXT NOT NULL,
        PRIMARY KEY (notice_id, version)
    );
    CREATE INDEX notices_originator ON notices (originator, notice_id);
    CREATE TABLE deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient TEXT NOT NULL,
        notice_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        sections TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        deadline_ms INTEGER,
        delivered_at_ms INTEGER,
        UNIQUE (notice_id, version, recipient),
        FOREIGN KEY (notice_id, version) REFERENCES notices (notice_id, version)
    );
    CREATE INDEX deliveries_queue ON deliveries (recipient, state, seq);
    CREATE INDEX deliveries_deadline ON deliveries (state, deadline_ms);
    CREATE TABLE receipts (
        notice_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        recipient TEXT NOT NULL,
        header_digest BLOB NOT NULL,
        proven BLOB NOT NULL,
        received_at_ms INTEGER NOT NULL,
        PRIMARY KEY (notice_id, version, recipient)
    );
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        agency TEXT NOT NULL,
        kind TEXT NOT NULL,
        notice_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        recipient TEXT NOT NULL,
        detail TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        acked INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX events_agency ON events (agency, acked, seq);
    """,
    # 2: policy bundles (signed activations), administrator actions, decision records
    """
    CREATE TABLE policy_bundles (
        version TEXT PRIMARY KEY,
        bundle BLOB NOT NULL,
        signed_activation BLOB,
        activated_by TEXT,
        activated_at_ms INTEGER,
        active INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE policy_activations (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        version TEXT NOT NULL REFERENCES policy_bundles (version),
        activated_by TEXT NOT NULL,
        activated_at_ms INTEGER NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE TABLE notice_restrictions (
        notice_id TEXT PRIMARY KEY,
        sequence INTEGER NOT NULL,
        restrictions BLOB NOT NULL,
        signed BLOB NOT NULL,
        at_ms INTEGER NOT NULL
    );
    ALTER TABLE agencies ADD COLUMN signed_entry BLOB;
    ALTER TABLE deliveries ADD COLUMN not_before_ms INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE admin_actions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    );
    """,
    # 3: transparency log (broker/store/tlog.py): leaves with the ids authorization reads,
    # every complete-subtree hash by node id (level << 56 | index), signed checkpoints,
    # witness cosignatures, and where the log has caught up with events, activations
    # and the registry
    """
    CREATE TABLE tlog_leaves (
        idx INTEGER PRIMARY KEY,
        leaf BLOB NOT NULL,
        kind TEXT NOT NULL,
        notice_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        originator TEXT NOT NULL,
        reader TEXT NOT NULL,
        logged_at_ms INTEGER NOT NULL
    );
    CREATE INDEX tlog_leaves_originator ON tlog_leaves (originator, idx);
    CREATE INDEX tlog_leaves_reader ON tlog_leaves (reader, idx);
    CREATE INDEX tlog_leaves_notice ON tlog_leaves (notice_id, version, kind);
    CREATE TABLE tlog_nodes (
        id INTEGER PRIMARY KEY,
        hash BLOB NOT NULL
    );
    CREATE TABLE tlog_checkpoints (
        size INTEGER PRIMARY KEY,
        root BLOB NOT NULL,
        note TEXT NOT NULL,
        issued_at_ms INTEGER NOT NULL
    );
    CREATE TABLE tlog_cosignatures (
        size INTEGER NOT NULL REFERENCES tlog_checkpoints (size),
        witness TEXT NOT NULL,
        line TEXT NOT NULL,
        signed_at INTEGER NOT NULL,
        received_at_ms INTEGER NOT NULL,
        PRIMARY KEY (size, witness)
    );
    CREATE TABLE tlog_cursors (
        source TEXT PRIMARY KEY,
        position INTEGER NOT NULL
    );
    CREATE TABLE tlog_registry (
        agency_id TEXT PRIMARY KEY,
        digest BLOB NOT NULL
    );
    """,
    # 4: lifecycle: notice state, actions, control deliveries to recipients, replies
    """
    CREATE TABLE notice_state (
        notice_id TEXT PRIMARY KEY,
        suspended_until_ms INTEGER NOT NULL DEFAULT 0,
        closed TEXT NOT NULL DEFAULT '',
        expires_at_ms INTEGER NOT NULL,
        review_sent INTEGER NOT NULL DEFAULT 0,
        flags TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX notice_state_expiry ON notice_state (closed, expires_at_ms);
    CREATE TABLE lifecycle_actions (
        action_id TEXT PRIMARY KEY,
        notice_id TEXT NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        action BLOB NOT NULL,
        signature BLOB NOT NULL,
        told TEXT NOT NULL,
        purged INTEGER NOT NULL,
        at_ms INTEGER NOT NULL
    );
    CREATE TABLE controls (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient TEXT NOT NULL,
        action_id TEXT NOT NULL REFERENCES lifecycle_actions (action_id),
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        deadline_ms INTEGER,
        delivered_at_ms INTEGER,
        receipt BLOB,
        UNIQUE (action_id, recipient)
    );
    CREATE INDEX controls_queue ON controls (recipient, state, seq);
    CREATE TABLE replies (
        notice_id TEXT NOT NULL,
        in_reply_to TEXT NOT NULL,
        kind TEXT NOT NULL,
        sender TEXT NOT NULL,
        recipient TEXT NOT NULL,
        sent_at_ms INTEGER NOT NULL,
        respond_by_ms INTEGER NOT NULL,
        answered_by TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (notice_id, recipient)
    );
    CREATE INDEX replies_in_reply_to ON replies (in_reply_to);
    """,
    # 5: deliveries cut once at publish (broker/core/delivery.py): the shared head and
    # section ciphertexts of a notice version (stored once), each recipient's share, and
    # what each delivery was decided under
    """
    ALTER TABLE notices ADD COLUMN head BLOB NOT NULL DEFAULT x'';
    CREATE TABLE notice_sections (
        notice_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        position INTEGER NOT NULL,
        ciphertext BLOB NOT NULL,
        PRIMARY KEY (notice_id, version, position)
    );
    ALTER TABLE deliveries ADD COLUMN cut BLOB NOT NULL DEFAULT x'';
    ALTER TABLE deliveries ADD COLUMN wrap BLOB NOT NULL DEFAULT x'';
    ALTER TABLE deliveries ADD COLUMN obligations BLOB NOT NULL DEFAULT x'';
    ALTER TABLE deliveries ADD COLUMN decided_under TEXT NOT NULL DEFAULT '';
    DROP INDEX deliveries_deadline;
    CREATE INDEX deliveries_in_flight ON deliveries (deadline_ms) WHERE state = 'in_flight'
    """,
    # 6: the key directory (broker/core/keymap.py): the value each logged agency holds,
    # revocations logged once, and the directory root each checkpoint signs
    """
    ALTER TABLE tlog_registry ADD COLUMN value BLOB NOT NULL DEFAULT x'';
    UPDATE tlog_registry SET digest = x'';
    CREATE TABLE tlog_revocations (
        party TEXT PRIMARY KEY,
        digest BLOB NOT NULL,
        revocation BLOB NOT NULL
    );
    ALTER TABLE tlog_checkpoints ADD COLUMN directory_root BLOB NOT NULL DEFAULT x''
    """,
    # 7: lookups (broker/store/lookup.py): token -> notice index, per-notice refs, which
    # querier hit which notice; triggers drop a notice's tokens when it closes (withdrawn,
    # cancelled, expired) or its ciphertext is purged, in the same transaction
    """
    CREATE TABLE lookup_notices (
        ref INTEGER PRIMARY KEY,
        notice_id TEXT NOT NULL UNIQUE,
        version INTEGER NOT NULL
    );
    CREATE TABLE lookup_tokens (
        token BLOB NOT NULL,
        ref INTEGER NOT NULL,
        PRIMARY KEY (token, ref)
    ) WITHOUT ROWID;
    CREATE INDEX lookup_tokens_ref ON lookup_tokens (ref);
    CREATE TABLE lookup_hits (
        querier TEXT NOT NULL,
        notice_id TEXT NOT NULL,
        hits INTEGER NOT NULL,
        first_at_ms INTEGER NOT NULL,
        last_at_ms INTEGER NOT NULL,
        PRIMARY KEY (querier, notice_id)
    ) WITHOUT ROWID;
    CREATE TRIGGER lookup_drop_closed AFTER UPDATE OF closed ON notice_state
    WHEN NEW.closed != '' BEGIN
        DELETE FROM lookup_tokens WHERE ref IN
            (SELECT ref FROM lookup_notices WHERE notice_id = NEW.notice_id);
        DELETE FROM lookup_notices WHERE notice_id = NEW.notice_id;
    END;
    CREATE TRIGGER lookup_drop_purged AFTER UPDATE OF envelope ON notices
    WHEN length(NEW.envelope) = 0 BEGIN
        DELETE FROM lookup_tokens WHERE ref IN
            (SELECT ref FROM lookup_notices WHERE notice_id = NEW.notice_id);
        DELETE FROM lookup_notices WHERE notice_id = NEW.notice_id;
    END;
    CREATE TRIGGER lookup_drop_deleted AFTER DELETE ON notices BEGIN
        DELETE FROM lookup_tokens WHERE ref IN
            (SELECT ref FROM lookup_notices WHERE notice_id = OLD.notice_id
             AND version = OLD.version);
        DELETE FROM lookup_notices WHERE notice_id = OLD.notice_id AND version = OLD.version;
    END;
    """,
    # + judicial: requests (broker/store/requests.py): each request's state and running
    # time limit, and its signed steps in order; the signed priority of each delivery
    # (urgent ones are leased first)
    """
    CREATE TABLE requests (
        notice_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        issuer TEXT NOT NULL,
        executor TEXT NOT NULL,
        priority TEXT NOT NULL,
        state TEXT NOT NULL,
        issued_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        deadline TEXT NOT NULL DEFAULT '',
        deadline_ms INTEGER NOT NULL DEFAULT 0,
        remind_at_ms INTEGER NOT NULL DEFAULT 0,
        reminded INTEGER NOT NULL DEFAULT 0,
        grounds TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX requests_issuer ON requests (issuer);
    CREATE INDEX requests_executor ON requests (executor);
    CREATE INDEX requests_due ON requests (remind_at_ms);
    CREATE TABLE request_steps (
        notice_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        action_id TEXT NOT NULL UNIQUE,
        action BLOB NOT NULL,
        signature BLOB NOT NULL,
        PRIMARY KEY (notice_id, position)
    );
    ALTER TABLE deliveries ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX deliveries_queue_priority ON deliveries (recipient, state, priority DESC, seq);
    DROP INDEX deliveries_queue;  -- its columns lead the one above: one index less per write
    """,
    # + evidence: chains of custody of sealed attachments (broker/store/custody.py)
    """
    CREATE TABLE custody (
        notice_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        section TEXT NOT NULL,
        seq INTEGER NOT NULL,
        record BLOB NOT NULL,
        signature BLOB NOT NULL,
        record_digest BLOB NOT NULL,
        log_index INTEGER NOT NULL,
        PRIMARY KEY (notice_id, version, section, seq)
    ) WITHOUT ROWID;
    """,
)
