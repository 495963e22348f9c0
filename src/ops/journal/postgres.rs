//! The settlement journal in PostgreSQL, shared by every replica.
//!
//! Two tables: `x402_journal_events`, every entry as written (append-only, unique per payment,
//! state and time so a record written twice is kept once), and `x402_payments`, one row per
//! authorization in its latest state. The payment id (a hash of the authorization) is the
//! primary key: a second `verified` record of an authorization that is in flight, pending or
//! settled is refused by the database, whichever replica sends it.
//!
//! When the database cannot be reached, a `verified` record fails (the request is refused with
//! 503 before the upstream is called); any later record of a payment that is already under way
//! (money may have moved) goes to the local spool file and is drained into the database when it
//! is back. Reconciliation claims rows with `FOR UPDATE SKIP LOCKED` inside a transaction: a
//! replica that dies mid-pass drops its connection, its locks go with it, and the next replica's
//! pass takes the rows over.
//!
//! All database work runs on a runtime of the journal's own, so connections outlive the
//! start-up runtime and never depend on which proxy thread asked.
//!
//! Records are written in groups (group commit): a few writers each take what is queued, write
//! it in one transaction with the statements pipelined, and answer each record once the
//! transaction is committed. Under load one commit covers many payments; a record is still
//! answered only once it is durable. A group that fails as a whole (a record the database
//! refuses, a deadlock) is written again a record per transaction, so one record's failure is
//! never another's.

use super::{
    check_pending, read_entries, rfc3339, FacilitatorLookup, FileJournal, Journal, JournalEntry,
    JournalError, PaymentState,
};
use crate::metrics::Metrics;
use crate::ops::receipts::{Receipt, ReceiptQuery};
use crate::payment::Succession;
use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio_postgres::Row;

/// Longest wait for the database on a request's path; past it the database counts as down.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(3);

/// A `verified` row older than this belongs to a request whose replica died before writing a
/// final state (no request lives this long): reconciliation treats it as pending.
const INTERRUPTED_AFTER: &str = "15 minutes";

/// Rows one reconciliation pass claims.
const CLAIM_BATCH: i64 = 50;

/// Writers that commit groups of records at once: while one commits, the next collects.
const GROUP_WRITERS: usize = 4;

/// The most records one transaction of the group commit takes.
const GROUP_LIMIT: usize = 64;

/// A record waiting for its group, with where its outcome goes.
type Queued = (
    JournalEntry,
    tokio::sync::oneshot::Sender<Result<(), JournalError>>,
);

/// The key of the advisory lock that serialises migrations across replicas.
const MIGRATION_LOCK: i64 = 0x7834_3032_6a6e_6c01;

/// Versioned schema changes, applied in order, each once.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE x402_journal_events (
        seq bigserial PRIMARY KEY,
        id text NOT NULL,
        state text NOT NULL,
        time text NOT NULL,
        entry text NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (id, state, time)
    );
    CREATE TABLE x402_payments (
        id text PRIMARY KEY,
        key text NOT NULL,
        state text NOT NULL,
        first_time text NOT NULL,
        time text NOT NULL,
        route text NOT NULL,
        payer text NOT NULL,
        amount text NOT NULL,
        asset text NOT NULL,
        network text NOT NULL,
        pay_to text NOT NULL,
        transaction text NOT NULL,
        facilitator text NOT NULL,
        reason text NOT NULL,
        valid_before bigint NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE UNIQUE INDEX x402_payments_key ON x402_payments (key) WHERE key <> '';
    CREATE INDEX x402_payments_state ON x402_payments (state, updated_at);
    CREATE INDEX x402_payments_first_time ON x402_payments (first_time);",
    ),
    (
        2,
        "ALTER TABLE x402_payments ADD COLUMN settle_request text NOT NULL DEFAULT ''",
    ),
];

const COLUMNS: &str = "id, key, state, first_time, time, route, payer, amount, asset, network, \
                       pay_to, transaction, facilitator, reason, valid_before, settle_request";

/// When a record replaces a payment's row: [`PaymentState::succession`] (the order of states the
/// whole gateway shares), spelled as a condition on the row (`x402_payments`) and the record
/// (`EXCLUDED`). An insert (no row yet) is always taken, as the table says for `None`.
static SUCCESSION: LazyLock<String> = LazyLock::new(|| {
    let pairs = |wanted: Succession| -> String {
        let mut listed = Vec::new();
        for current in PaymentState::ALL {
            for next in PaymentState::ALL {
                if PaymentState::succession(Some(current), next) == wanted {
                    listed.push(format!("('{}', '{}')", current.as_str(), next.as_str()));
                }
            }
        }
        // An empty list would not parse; a pair that never occurs keeps the SQL valid.
        if listed.is_empty() {
            listed.push("('', '')".into());
        }
        listed.join(", ")
    };
    format!(
        "(x402_payments.state, EXCLUDED.state) IN ({replaces}) \
         OR ((x402_payments.state, EXCLUDED.state) IN ({unless_older}) \
             AND EXCLUDED.time >= x402_payments.time)",
        replaces = pairs(Succession::Replaces),
        unless_older = pairs(Succession::ReplacesUnlessOlder),
    )
});

/// The PostgreSQL journal with its local spool.
pub struct PgJournal {
    pool: Pool,
    runtime: tokio::runtime::Handle,
    spool: Arc<FileJournal>,
    spool_path: PathBuf,
    /// Held while the spool is appended to or drained, so a drain never drops a new record.
    spool_lock: Arc<tokio::sync::Mutex<()>>,
    pending: Mutex<Vec<JournalEntry>>,
    /// Records on their way to the group writers.
    queue: tokio::sync::mpsc::UnboundedSender<Queued>,
}

fn db_error(e: impl std::fmt::Display) -> JournalError {
    JournalError::Database(e.to_string())
}

/// A pool for `url`; nothing is connected yet. Errors never carry the URL (it holds a password).
pub fn pool(url: &str, max_size: usize) -> Result<Pool, JournalError> {
    crate::store::postgres_pool(url, max_size).map_err(JournalError::Database)
}

/// A runtime on a thread of its own that lives as long as the process; returns its handle.
fn journal_runtime() -> Result<tokio::runtime::Handle, JournalError> {
    crate::store::database_runtime("journal-db").map_err(JournalError::Database)
}

/// Applies the migrations not applied yet, under an advisory lock so that replicas starting
/// together migrate once. Returns the versions this call applied.
pub async fn migrate(pool: &Pool) -> Result<Vec<i32>, JournalError> {
    let mut client = pool.get().await.map_err(db_error)?;
    let tx = client.transaction().await.map_err(db_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS x402_schema_migrations (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(db_error)?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM x402_schema_migrations",
            &[],
        )
        .await
        .map_err(db_error)?
        .get(0);
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql).await.map_err(db_error)?;
        tx.execute(
            "INSERT INTO x402_schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(db_error)?;
        applied.push(*version);
    }
    tx.commit().await.map_err(db_error)?;
    Ok(applied)
}

fn entry_of(row: &Row) -> JournalEntry {
    let state: String = row.get("state");
    JournalEntry {
        time: row.get("time"),
        id: row.get("id"),
        state: PaymentState::parse(&state).unwrap_or(PaymentState::Pending),
        route: row.get("route"),
        payer: row.get("payer"),
        amount: row.get("amount"),
        asset: row.get("asset"),
        network: row.get("network"),
        pay_to: row.get("pay_to"),
        transaction: row.get("transaction"),
        facilitator: row.get("facilitator"),
        reason: row.get("reason"),
        key: row.get("key"),
        valid_before: u64::try_from(row.get::<_, i64>("valid_before")).unwrap_or(0),
        settle_request: row.get("settle_request"),
    }
}

/// The statement that writes one record: its event, once however often it is sent, and, when the
/// event is new, the payment's row as the state table allows. Returns (events inserted, rows
/// taken). `later` holds the update of a record after `verified`.
fn record_statement(later: &str) -> String {
    format!(
        "WITH event AS ( \
             INSERT INTO x402_journal_events (id, state, time, entry) VALUES ($1, $3, $4, $17) \
             ON CONFLICT (id, state, time) DO NOTHING RETURNING 1 \
         ), taken AS ( \
             INSERT INTO x402_payments ({COLUMNS}) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15::bigint, $16 \
             WHERE EXISTS (SELECT 1 FROM event) \
             ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, time = EXCLUDED.time, {later} \
             WHERE {succession} RETURNING id \
         ) SELECT (SELECT count(*) FROM event), (SELECT count(*) FROM taken)",
        succession = *SUCCESSION,
    )
}

/// A `verified` record: a new attempt with the same authorization is taken only once the last one
/// charged nothing (the state table); otherwise the authorization is in flight elsewhere, open or
/// settled, and the attempt is refused.
static RECORD_VERIFIED: LazyLock<String> = LazyLock::new(|| {
    record_statement(
        "route = EXCLUDED.route, payer = EXCLUDED.payer, amount = EXCLUDED.amount, \
         asset = EXCLUDED.asset, network = EXCLUDED.network, pay_to = EXCLUDED.pay_to, \
         transaction = '', facilitator = EXCLUDED.facilitator, reason = EXCLUDED.reason, \
         valid_before = EXCLUDED.valid_before, settle_request = '', updated_at = now()",
    )
});

/// Any later record: the transaction once known, the reason, and the settle request kept only
/// while the payment is pending.
static RECORD_LATER: LazyLock<String> = LazyLock::new(|| {
    record_statement(
        "transaction = CASE WHEN EXCLUDED.transaction <> '' THEN EXCLUDED.transaction \
         ELSE x402_payments.transaction END, reason = EXCLUDED.reason, updated_at = now(), \
         settle_request = CASE WHEN EXCLUDED.state <> 'pending' THEN '' \
             WHEN EXCLUDED.settle_request <> '' THEN EXCLUDED.settle_request \
             ELSE x402_payments.settle_request END",
    )
});

/// Writes one entry: its event (once, however often it is sent) and the payment's row, in one
/// statement.
async fn apply(client: &impl GenericClient, entry: &JournalEntry) -> Result<(), JournalError> {
    let text = serde_json::to_string(entry).map_err(|e| JournalError::Write(e.to_string()))?;
    let valid_before = i64::try_from(entry.valid_before).unwrap_or(i64::MAX);
    let state = entry.state.as_str();
    // Kept only while the payment is open: it carries the signed authorization.
    let settle_request = if entry.state == PaymentState::Pending {
        entry.settle_request.as_str()
    } else {
        ""
    };
    let values: [&(dyn tokio_postgres::types::ToSql + Sync); 17] = [
        &entry.id,
        &entry.key,
        &state,
        &entry.time,
        &entry.time,
        &entry.route,
        &entry.payer,
        &entry.amount,
        &entry.asset,
        &entry.network,
        &entry.pay_to,
        &entry.transaction,
        &entry.facilitator,
        &entry.reason,
        &valid_before,
        &settle_request,
        &text,
    ];
    let sql = if entry.state == PaymentState::Verified {
        RECORD_VERIFIED.as_str()
    } else {
        RECORD_LATER.as_str()
    };
    // Prepared once per connection: a record costs its share of a round trip, not a parse.
    let record = client.prepare_cached(sql).await.map_err(db_error)?;
    let counts = client.query_one(&record, &values).await.map_err(db_error)?;
    let (events, taken): (i64, i64) = (counts.get(0), counts.get(1));
    if events == 0 {
        // Written before (a spooled record whose first write reached the database).
        return Ok(());
    }
    if taken == 0 && entry.state == PaymentState::Verified {
        // A refused record leaves nothing: its event (inserted just above) goes too, as the rest
        // of its group is committed.
        client
            .execute(
                "DELETE FROM x402_journal_events WHERE id = $1 AND state = $2 AND time = $3",
                &[&entry.id, &state, &entry.time],
            )
            .await
            .map_err(db_error)?;
        let current: String = client
            .query_one(
                "SELECT state FROM x402_payments WHERE id = $1",
                &[&entry.id],
            )
            .await
            .map_err(db_error)?
            .get(0);
        return Err(JournalError::AlreadyRecorded {
            state: PaymentState::parse(&current).unwrap_or(PaymentState::Pending),
        });
    }
    Ok(())
}

impl PgJournal {
    /// Connects, migrates, and drains what an earlier run left in the spool. Blocks; call it
    /// outside any async runtime.
    pub fn open(url: &str, spool_path: &Path) -> Result<Arc<Self>, JournalError> {
        let runtime = journal_runtime()?;
        let pool = pool(url, 16)?;
        let applied = runtime.block_on(migrate(&pool))?;
        if applied.is_empty() {
            tracing::info!("journal database schema is up to date");
        } else {
            tracing::info!(versions = ?applied, "journal database migrated");
        }
        let (spool, _) = FileJournal::open(spool_path)?;
        let (queue, queued) = tokio::sync::mpsc::unbounded_channel();
        let queued = Arc::new(tokio::sync::Mutex::new(queued));
        for _ in 0..GROUP_WRITERS {
            runtime.spawn(write_groups(pool.clone(), queued.clone()));
        }
        let journal = Arc::new(Self {
            pool,
            runtime,
            spool,
            spool_path: spool_path.to_path_buf(),
            spool_lock: Arc::new(tokio::sync::Mutex::new(())),
            pending: Mutex::new(Vec::new()),
            queue,
        });
        journal.block_on(journal.clone().drain_spool())?;
        Ok(journal)
    }

    fn block_on<T>(&self, work: impl Future<Output = T>) -> T {
        self.runtime.block_on(work)
    }

    /// Runs `work` on the journal's runtime and waits for it from any runtime.
    async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, JournalError>> + Send + 'static,
    ) -> Result<T, JournalError> {
        self.runtime
            .spawn(async move {
                tokio::time::timeout(DATABASE_TIMEOUT * 2, work)
                    .await
                    .unwrap_or_else(|_| Err(JournalError::Database("timed out".into())))
            })
            .await
            .map_err(db_error)?
    }

    /// Settled and pending payments whose authorization has not expired: the replay guard keeps
    /// refusing them after a restart.
    pub fn live_authorizations(&self, now: u64) -> Result<Vec<JournalEntry>, JournalError> {
        let pool = self.pool.clone();
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        self.block_on(async move {
            let client = pool.get().await.map_err(db_error)?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM x402_payments \
                         WHERE state IN ('settled', 'pending') AND valid_before > $1"
                    ),
                    &[&now],
                )
                .await
                .map_err(db_error)?;
            Ok(rows.iter().map(entry_of).collect())
        })
    }

    /// Moves the spooled records into the database, each once, then empties the spool.
    async fn drain_spool(self: Arc<Self>) -> Result<usize, JournalError> {
        let lock = self.spool_lock.clone();
        let _held = lock.lock().await;
        let entries = read_entries(&self.spool_path)?;
        if entries.is_empty() {
            return Ok(0);
        }
        let mut client = self.pool.get().await.map_err(db_error)?;
        let tx = client.transaction().await.map_err(db_error)?;
        for entry in &entries {
            match apply(&tx, entry).await {
                // A payment in flight again on a replica: its spooled verified line is history.
                Ok(()) | Err(JournalError::AlreadyRecorded { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        tx.commit().await.map_err(db_error)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.spool_path)
            .map_err(|e| JournalError::Write(e.to_string()))?;
        file.set_len(0)
            .and_then(|_| file.sync_all())
            .map_err(|e| JournalError::Write(e.to_string()))?;
        tracing::info!(
            records = entries.len(),
            "spooled journal records moved to the database"
        );
        Ok(entries.len())
    }

    /// One reconciliation pass, shared by every replica: drains the spool, claims open payments
    /// no other replica is working on, asks their facilitator, records what it says, and
    /// refreshes the journal's metrics.
    pub async fn reconcile_once(self: &Arc<Self>, facilitator_for: FacilitatorLookup<'_>) {
        let journal = self.clone();
        if let Err(e) = self.run(journal.drain_spool()).await {
            tracing::warn!(error = %e, "cannot drain the journal spool yet");
        }
        if let Err(e) = self.reconcile_claimed(facilitator_for).await {
            tracing::warn!(error = %e, "cannot reconcile pending settlements now");
        }
        if let Err(e) = self.refresh_metrics().await {
            tracing::warn!(error = %e, "cannot read journal metrics");
        }
    }

    async fn reconcile_claimed(
        self: &Arc<Self>,
        facilitator_for: FacilitatorLookup<'_>,
    ) -> Result<(), JournalError> {
        // The transaction (and the row locks that are the claim) lives on the journal's runtime;
        // the facilitator calls happen here, and their answers are sent back to be recorded.
        let (claimed_tx, mut claimed) = tokio::sync::mpsc::channel::<Vec<JournalEntry>>(1);
        let (answers, answered) = tokio::sync::mpsc::channel::<Option<JournalEntry>>(1);
        let pool = self.pool.clone();
        let worker = self
            .runtime
            .spawn(claim_and_record(pool, claimed_tx, answered));
        let Some(entries) = claimed.recv().await else {
            return worker.await.map_err(db_error)?;
        };
        if let Ok(mut pending) = self.pending.lock() {
            pending.clone_from(&entries);
        }
        for entry in entries {
            let entry = if entry.state == PaymentState::Verified {
                let mut pending = entry.next(PaymentState::Pending);
                pending.reason = "interrupted_before_final_state".into();
                if answers.send(Some(pending.clone())).await.is_err() {
                    break;
                }
                pending
            } else {
                entry
            };
            let next = check_pending(&entry, facilitator_for).await;
            if next.is_some() && answers.send(next).await.is_err() {
                break;
            }
        }
        drop(answers);
        worker.await.map_err(db_error)?
    }

    async fn refresh_metrics(&self) -> Result<(), JournalError> {
        let pool = self.pool.clone();
        let (pending, revenue) = self
            .run(async move {
                let client = pool.get().await.map_err(db_error)?;
                let pending: i64 = client
                    .query_one(
                        "SELECT count(*) FROM x402_payments WHERE state = 'pending'",
                        &[],
                    )
                    .await
                    .map_err(db_error)?
                    .get(0);
                let rows = client
                    .query(
                        "SELECT route, network, asset, sum(amount::numeric)::text FROM x402_payments \
                         WHERE state = 'settled' AND amount ~ '^[0-9]{1,60}$' \
                         GROUP BY route, network, asset",
                        &[],
                    )
                    .await
                    .map_err(db_error)?;
                let revenue: Vec<(String, String, String, String)> = rows
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                    .collect();
                Ok((pending, revenue))
            })
            .await?;
        let metrics = Metrics::global();
        metrics.journal_pending.set(pending);
        for (route, network, asset, total) in revenue {
            let total: f64 = total.parse().unwrap_or(0.0);
            metrics
                .ledger_revenue
                .with_label_values(&[&route, &network, &asset])
                .set(total);
        }
        Ok(())
    }

    /// The payments `query` selects, one row each in its latest state, oldest first, read from
    /// `url` (no migration, no spool).
    pub async fn read_receipts(
        url: &str,
        query: &ReceiptQuery,
    ) -> Result<Vec<JournalEntry>, JournalError> {
        Ok(Self::read_receipt_rows(url, query)
            .await?
            .into_iter()
            .map(|r| r.entry)
            .collect())
    }

    /// [`read_receipts`](Self::read_receipts) with each payment's first recorded time, or one
    /// page of them (`query.page`, from the database's index on the first time): the reader of
    /// the ledger that the `receipts` command and the admin API share.
    pub async fn read_receipt_rows(
        url: &str,
        query: &ReceiptQuery,
    ) -> Result<Vec<Receipt>, JournalError> {
        let pool = pool(url, 1)?;
        let client = pool.get().await.map_err(db_error)?;
        let since = query.since_ms.map(rfc3339);
        let until = query.until_ms.map(rfc3339);
        let state = query.state.map(|s| s.as_str().to_string());
        let filter = "($1::text IS NULL OR first_time >= $1) \
             AND ($2::text IS NULL OR route = $2) \
             AND ($3::text IS NULL OR lower(payer) = lower($3)) \
             AND ($4::text IS NULL OR state = $4) \
             AND ($5::text IS NULL OR first_time < $5)";
        let rows = match &query.page {
            None => client
                .query(
                    &format!("SELECT {COLUMNS} FROM x402_payments WHERE {filter} ORDER BY first_time, id"),
                    &[&since, &query.route, &query.payer, &state, &until],
                )
                .await,
            Some(page) => {
                let (after_time, after_id) = page.after.clone().unzip();
                let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
                client
                    .query(
                        &format!(
                            "SELECT {COLUMNS} FROM x402_payments WHERE {filter} \
                               AND ($6::text IS NULL OR (first_time, id) < ($6, $7::text)) \
                             ORDER BY first_time DESC, id DESC LIMIT $8"
                        ),
                        &[
                            &since,
                            &query.route,
                            &query.payer,
                            &state,
                            &until,
                            &after_time,
                            &after_id,
                            &limit,
                        ],
                    )
                    .await
            }
        }
        .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|row| Receipt {
                first_time: row.get("first_time"),
                entry: entry_of(row),
            })
            // Refund candidates are judged on the reason (the `receipts` command's filter; pages
            // of the admin API do not use it).
            .filter(|r| {
                !query.refund_candidates
                    || crate::payment::is_refund_candidate(r.entry.state, &r.entry.reason)
            })
            .collect())
    }
}

/// One group writer: takes what is queued (at most [`GROUP_LIMIT`]), writes it, answers each
/// record; until the journal is dropped.
async fn write_groups(
    pool: Pool,
    queued: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Queued>>>,
) {
    loop {
        let group = {
            let mut queued = queued.lock().await;
            let Some(first) = queued.recv().await else {
                return;
            };
            let mut group = vec![first];
            while group.len() < GROUP_LIMIT {
                match queued.try_recv() {
                    Ok(more) => group.push(more),
                    Err(_) => break,
                }
            }
            group
        };
        let (entries, answers): (Vec<JournalEntry>, Vec<_>) = group.into_iter().unzip();
        let outcomes = write_group(&pool, &entries).await;
        for (answer, outcome) in answers.into_iter().zip(outcomes) {
            // A request that stopped waiting has nothing to be told.
            let _ = answer.send(outcome);
        }
    }
}

/// Writes `entries` in one transaction; when that transaction fails as a whole (not for want of
/// time: the database is then slow for every record), each record in one of its own.
async fn write_group(pool: &Pool, entries: &[JournalEntry]) -> Vec<Result<(), JournalError>> {
    let timed_out = || JournalError::Database("timed out".into());
    if entries.len() > 1 {
        match tokio::time::timeout(DATABASE_TIMEOUT * 2, write_together(pool, entries)).await {
            Ok(Ok(outcomes)) => return outcomes,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, records = entries.len(), "a journal group failed; writing its records one by one");
            }
            Err(_) => return entries.iter().map(|_| Err(timed_out())).collect(),
        }
    }
    let mut outcomes = Vec::with_capacity(entries.len());
    for entry in entries {
        let alone = tokio::time::timeout(
            DATABASE_TIMEOUT * 2,
            write_together(pool, std::slice::from_ref(entry)),
        )
        .await;
        outcomes.push(match alone {
            Ok(Ok(mut outcome)) => outcome.pop().unwrap_or(Ok(())),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(timed_out()),
        });
    }
    outcomes
}

/// Writes `entries` in one transaction, their statements pipelined, in the order of their ids
/// (so that two groups never wait on each other's rows in opposite orders). `Ok` holds each
/// record's outcome (written, or already recorded elsewhere); `Err` means nothing was committed.
async fn write_together(
    pool: &Pool,
    entries: &[JournalEntry],
) -> Result<Vec<Result<(), JournalError>>, JournalError> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|a, b| entries[*a].id.cmp(&entries[*b].id));
    let mut client = pool.get().await.map_err(db_error)?;
    let tx = client.transaction().await.map_err(db_error)?;
    let written =
        futures_util::future::join_all(order.iter().map(|&i| apply(&tx, &entries[i]))).await;
    let mut outcomes: Vec<Result<(), JournalError>> = vec![Ok(()); entries.len()];
    for (i, outcome) in order.into_iter().zip(written) {
        match outcome {
            Ok(()) => {}
            Err(refused @ JournalError::AlreadyRecorded { .. }) => outcomes[i] = Err(refused),
            // The transaction is aborted: nothing of the group is kept.
            Err(e) => return Err(e),
        }
    }
    tx.commit().await.map_err(db_error)?;
    Ok(outcomes)
}

/// Claims open payments in one transaction, records the answers sent back, commits.
async fn claim_and_record(
    pool: Pool,
    claimed: tokio::sync::mpsc::Sender<Vec<JournalEntry>>,
    mut answers: tokio::sync::mpsc::Receiver<Option<JournalEntry>>,
) -> Result<(), JournalError> {
    let mut client = pool.get().await.map_err(db_error)?;
    let tx = client.transaction().await.map_err(db_error)?;
    let rows = tx
        .query(
            &format!(
                "SELECT {COLUMNS} FROM x402_payments \
                 WHERE state = 'pending' \
                    OR (state = 'verified' AND updated_at < now() - interval '{INTERRUPTED_AFTER}') \
                 ORDER BY updated_at LIMIT $1 FOR UPDATE SKIP LOCKED"
            ),
            &[&CLAIM_BATCH],
        )
        .await
        .map_err(db_error)?;
    let entries: Vec<JournalEntry> = rows.iter().map(entry_of).collect();
    if entries.is_empty() || claimed.send(entries).await.is_err() {
        return Ok(());
    }
    while let Some(answer) = answers.recv().await {
        if let Some(entry) = answer {
            apply(&tx, &entry).await?;
        }
    }
    tx.commit().await.map_err(db_error)
}

#[async_trait]
impl Journal for PgJournal {
    async fn append(&self, entry: JournalEntry) -> Result<(), JournalError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let result = match self.queue.send((entry.clone(), answer)) {
            // Every wait of a writer is bounded, so the answer comes.
            Ok(()) => answered
                .await
                .unwrap_or_else(|_| Err(JournalError::Database("the writer stopped".into()))),
            Err(_) => Err(JournalError::Database("the writer stopped".into())),
        };
        let error = match result {
            Ok(()) => return Ok(()),
            Err(e @ JournalError::AlreadyRecorded { .. }) => return Err(e),
            Err(e) => e,
        };
        Metrics::global().journal_errors.inc();
        if entry.state == PaymentState::Verified {
            // Nothing has happened yet: refusing the request loses nothing.
            tracing::error!(error = %error, id = %entry.id, "journal database unavailable; refusing the payment");
            return Err(error);
        }
        // Money may have moved: keep the record locally until the database takes it.
        tracing::warn!(error = %error, id = %entry.id, state = entry.state.as_str(), "journal database unavailable; record spooled");
        let _held = self.spool_lock.lock().await;
        self.spool.append(entry).await
    }

    fn pending(&self) -> Vec<JournalEntry> {
        self.pending.lock().map(|p| p.clone()).unwrap_or_default()
    }
}
