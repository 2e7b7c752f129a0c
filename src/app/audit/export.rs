//! Exporting and following the global log: the auditors' bulk tools
//! (`GET /api/v1/audit/export`, `shopfront audit export`, `shopfront audit tail`).
//!
//! **One line format** ([`ExportLine`]), NDJSON: one JSON object per event and line, in log order
//! (`(transaction_id, position)`, ADR 0001), with the keys
//!
//! | key | |
//! |---|---|
//! | `position` | the event's global position (what a reader resumes after) |
//! | `transaction_id` | the writing transaction's id (the first half of log order) |
//! | `recorded_at` | commit-side time, RFC 3339 in UTC with microseconds |
//! | `store_id` | the store the event's aggregate belongs to; absent when it belongs to none (accounts) |
//! | `aggregate_type`, `aggregate_id`, `sequence` | the aggregate and the event's place in it |
//! | `event_type`, `event_version` | as stored |
//! | `payload` | the stored JSON text, unchanged; `null` when it holds personal data in clear ([`holds_clear_personal_data`]) |
//! | `metadata` | the stored JSON text, unchanged, when it holds the known keys only; else those keys of it ([`EventMetadata::KEYS`]) |
//!
//! Personal data stays sealed: payloads carry it as the ciphertext that was stored, which nobody
//! can open once the person is erased, so an export never undoes an erasure. Older events'
//! client IPs and user agents (metadata) and the clear Telegram ids of `Account` events of
//! version 1.0 never leave.
//!
//! **A consistent slice.** An export ([`LogExport`]) fixes its end at the log's head when it
//! starts, then reads `(after, head]` in batches of [`BATCH`] with keyset pagination in log
//! order: each batch is one short statement (no snapshot is held while a slow client reads), and
//! every event at or before the head had committed when the export started, so the slice is the
//! same however long the export takes. The aggregate type, time and actor filters are applied in
//! SQL. A store's slice is its own events (the Store aggregate) and those of the aggregates
//! whose first event names it, as the live feeds filter it: the reader learns each aggregate's
//! store from its first event as it passes (looking up the first events of aggregates older
//! than the slice), so filtering by store costs no more than reading the whole slice.
//!
//! **Following** ([`LogTail`]) repeats that: the slice up to the head, then it waits for the
//! next commit (`LISTEN` through [`Notifications`], a poll as fallback, since the visibility
//! horizon moves without a notification) and reads the next slice. Resuming after the last
//! `position` seen, on any process, gives every event after it exactly once, in log order.
//!
//! The stored payload and metadata are passed through as text, never parsed (the stored `json`
//! text is serde_json's compact output): an export runs near the speed of `COPY`
//! (`shopfront bench audit-export`).

use std::collections::HashMap;
use std::time::Duration;

use aggregates::{AccountId, EventMetadata, StoreId};
use bytes::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};
use futures::Stream;
use projections::log::{GlobalLog, LogPosition};
use projections::notifications::Notifications;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use tokio::sync::watch;
use uuid::Uuid;

use crate::app::{App, AppError, Caller};
use aggregates::upcast::holds_clear_personal_data;

/// Events read per statement. Large, so the round trips cost little next to the rows; small
/// enough that a batch (about 600 bytes an event) stays a few megabytes.
pub const BATCH: i64 = 5_000;

/// How often a tail looks at the log when no notification woke it (the visibility horizon can
/// move without one).
const POLL: Duration = Duration::from_millis(100);

/// Aggregates whose store an export remembers before it forgets them all and looks them up
/// again from their first events.
const STORE_CACHE: usize = 500_000;

/// Which events an export or a tail carries; every field narrows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportFilter {
    /// One store's events only (its own and its aggregates'); `None`: the whole platform.
    pub store_id: Option<StoreId>,
    /// `Order`, `PaymentReceipt`, `Stock`, `Product`, `Store`, `Account`.
    pub aggregate_type: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
    /// Events of commands this account issued.
    pub actor_id: Option<AccountId>,
}

/// One exported event, borrowed from the row it was read from: the one place that writes the
/// line format (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportLine<'a> {
    /// The event's global position: what a reader resumes after.
    pub position: i64,
    /// The writing transaction's id: log order is `(transaction_id, position)`.
    pub transaction_id: i64,
    pub recorded_at: DateTime<Utc>,
    /// The store the event's aggregate belongs to; `None` (no key) for accounts.
    pub store_id: Option<Uuid>,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    /// The event's number within its aggregate, from 1.
    pub sequence: i64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    /// The stored payload's JSON text.
    pub payload: &'a str,
    /// The stored metadata's JSON text.
    pub metadata: &'a str,
}

impl ExportLine<'_> {
    /// Appends the line (with its `\n`) to `out`, withholding what must not leave.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        self.write_with(out, &mut MetadataMemo::default());
    }

    /// [`ExportLine::write_to`], reusing what `memo` found of the previous line's metadata.
    fn write_with(&self, out: &mut Vec<u8>, memo: &mut MetadataMemo) {
        out.extend_from_slice(b"{\"position\":");
        write_int(out, self.position);
        out.extend_from_slice(b",\"transaction_id\":");
        write_int(out, self.transaction_id);
        out.extend_from_slice(b",\"recorded_at\":\"");
        write_timestamp(out, self.recorded_at);
        out.push(b'"');
        if let Some(store_id) = self.store_id {
            out.extend_from_slice(b",\"store_id\":\"");
            let mut buffer = Uuid::encode_buffer();
            out.extend_from_slice(store_id.hyphenated().encode_lower(&mut buffer).as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b",\"aggregate_type\":");
        write_string(out, self.aggregate_type);
        out.extend_from_slice(b",\"aggregate_id\":");
        write_string(out, self.aggregate_id);
        out.extend_from_slice(b",\"sequence\":");
        write_int(out, self.sequence);
        out.extend_from_slice(b",\"event_type\":");
        write_string(out, self.event_type);
        out.extend_from_slice(b",\"event_version\":");
        write_string(out, self.event_version);
        out.extend_from_slice(b",\"payload\":");
        if holds_clear_personal_data(self.aggregate_type, self.event_type, self.event_version) {
            out.extend_from_slice(b"null");
        } else {
            write_json_text(out, self.payload);
        }
        out.extend_from_slice(b",\"metadata\":");
        write_json_text(out, memo.kept(self.metadata));
        out.extend_from_slice(b"}\n");
    }
}

fn write_int(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`: fixed width, so lines sort and compare as text too.
fn write_timestamp(out: &mut Vec<u8>, at: DateTime<Utc>) {
    let year = at.year();
    if !(0..=9999).contains(&year) {
        out.extend_from_slice(
            at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .as_bytes(),
        );
        return;
    }
    let digits = |out: &mut Vec<u8>, value: u32, width: usize| {
        let mut buffer = [b'0'; 4];
        let mut rest = value;
        for place in (0..width).rev() {
            buffer[place] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        out.extend_from_slice(&buffer[..width]);
    };
    digits(out, year as u32, 4);
    out.push(b'-');
    digits(out, at.month(), 2);
    out.push(b'-');
    digits(out, at.day(), 2);
    out.push(b'T');
    digits(out, at.hour(), 2);
    out.push(b':');
    digits(out, at.minute(), 2);
    out.push(b':');
    digits(out, at.second(), 2);
    out.push(b'.');
    // A leap second shows as 60 in chrono's nanoseconds (over 1e9): keep six digits.
    let micros = (at.nanosecond() % 1_000_000_000) / 1_000;
    let mut buffer = [b'0'; 6];
    let mut rest = micros;
    for place in (0..6).rev() {
        buffer[place] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&buffer);
    out.push(b'Z');
}

/// A JSON string literal of `value`.
fn write_string(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    let bytes = value.as_bytes();
    let mut start = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..at]);
        if escaped.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(escaped);
        }
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Stored JSON text on one line. Postgres keeps `json` text as it was written: a line break in
/// it can only be whitespace between tokens (JSON strings cannot hold one raw), so it becomes a
/// space and the value stays the same.
fn write_json_text(out: &mut Vec<u8>, text: &str) {
    let start = out.len();
    out.extend_from_slice(text.trim().as_bytes());
    if memchr::memchr2(b'\n', b'\r', &out[start..]).is_some() {
        for byte in &mut out[start..] {
            if matches!(*byte, b'\n' | b'\r') {
                *byte = b' ';
            }
        }
    }
}

/// The metadata with [`EventMetadata::KEYS`] only, or `None` when `stored` holds no other key
/// (then it leaves as stored). Anything but an object leaves as `{}`.
fn known_metadata(stored: &str) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

    /// Whether a key is a known one, read without allocating.
    struct KnownKey(bool);
    impl<'de> serde::Deserialize<'de> for KnownKey {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Key;
            impl Visitor<'_> for Key {
                type Value = KnownKey;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a key")
                }
                fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<KnownKey, E> {
                    Ok(KnownKey(EventMetadata::KEYS.contains(&key)))
                }
            }
            deserializer.deserialize_str(Key)
        }
    }
    /// Whether every key of an object is a known one.
    struct OnlyKnownKeys;
    impl<'de> Visitor<'de> for OnlyKnownKeys {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<bool, M::Error> {
            let mut known = true;
            while let Some(KnownKey(key)) = map.next_key()? {
                known &= key;
                map.next_value::<IgnoredAny>()?;
            }
            Ok(known)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(stored);
    if let Ok(true) = (&mut deserializer).deserialize_map(OnlyKnownKeys) {
        return None;
    }
    let kept: serde_json::Map<String, serde_json::Value> = serde_json::from_str(stored)
        .map(|all: serde_json::Map<String, serde_json::Value>| {
            all.into_iter()
                .filter(|(key, _)| EventMetadata::KEYS.contains(&key.as_str()))
                .collect()
        })
        .unwrap_or_default();
    Some(serde_json::Value::Object(kept).to_string())
}

/// The statement reading one batch: `$1, $2` after, `$3, $4` up to, `$5` aggregate type, `$6`,
/// `$7` time, `$8` actor, `$9` limit. No JSON is parsed here: which store an event belongs to is
/// worked out by the reader from the texts (a join per event to its aggregate's first event,
/// hashed anew for every batch, cost a store's export seconds per batch on a large log).
const BATCH_STATEMENT: &str = "select e.transaction_id::text::bigint, e.global_position,
        e.recorded_at, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type,
        e.event_version, e.payload::text, e.metadata::text
   from events e
  where (e.transaction_id, e.global_position) > ($1::bigint::text::xid8, $2)
    and (e.transaction_id, e.global_position) <= ($3::bigint::text::xid8, $4)
    and e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
    and ($5::text is null or e.aggregate_type = $5)
    and ($6::timestamptz is null or e.recorded_at >= $6)
    and ($7::timestamptz is null or e.recorded_at < $7)
    and ($8::text is null or e.metadata ->> 'actor_id' = $8)
  order by e.transaction_id, e.global_position
  limit $9";

/// Whether the database holds the event log with its global-log columns (an audit command run
/// against the wrong database, or one never migrated, says so instead of failing on a query).
pub async fn log_schema_present(pool: &PgPool) -> Result<bool, AppError> {
    let columns: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.columns
          where table_schema = current_schema() and table_name = 'events'
            and column_name in ('global_position', 'transaction_id', 'recorded_at')",
    )
    .fetch_one(pool)
    .await?;
    Ok(columns == 3)
}

/// The store an aggregate's first event names: `store_id` of the object under the event's
/// type (`payload -> event_type ->> 'store_id'`, as the live feeds filter a store's events),
/// read from the stored text without allocating.
fn named_store(event_type: &str, payload: &str) -> Option<Uuid> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

    #[derive(serde::Deserialize)]
    struct Fields {
        #[serde(default)]
        store_id: Option<Uuid>,
    }
    /// Whether a key is the event's type.
    struct KeyIs<'t>(&'t str);
    impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
            deserializer.deserialize_str(self)
        }
    }
    impl Visitor<'_> for KeyIs<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a key")
        }
        fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
            Ok(key == self.0)
        }
    }
    struct Tagged<'t>(&'t str);
    impl<'de> Visitor<'de> for Tagged<'_> {
        type Value = Option<Uuid>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an event")
        }
        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Option<Uuid>, M::Error> {
            let mut store = None;
            while let Some(is_tag) = map.next_key_seed(KeyIs(self.0))? {
                if is_tag {
                    store = map.next_value::<Fields>()?.store_id;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(store)
        }
    }
    serde_json::Deserializer::from_str(payload)
        .deserialize_map(Tagged(event_type))
        .ok()
        .flatten()
}

/// The last metadata text seen and what leaves of it: the events of one decision share their
/// metadata, so most lines need no parsing at all.
#[derive(Default)]
struct MetadataMemo {
    stored: String,
    kept: Option<String>,
}

impl MetadataMemo {
    /// What of `stored` leaves (see [`known_metadata`]).
    fn kept<'a>(&'a mut self, stored: &'a str) -> &'a str {
        if self.stored != stored {
            self.kept = known_metadata(stored);
            self.stored.clear();
            self.stored.push_str(stored);
        }
        self.kept.as_deref().unwrap_or(stored)
    }
}

/// A batch being read ahead: what it reads after and up to, and the task reading it.
struct Ahead {
    after: LogPosition,
    end: LogPosition,
    rows: tokio::task::JoinHandle<Result<Vec<PgRow>, sqlx::Error>>,
}

/// Reads batches of a filtered log and writes them as lines, remembering which store each
/// aggregate belongs to. While it writes a batch's lines the database reads the next one
/// (another task), so the two overlap.
struct Reader {
    pool: PgPool,
    filter: ExportFilter,
    /// aggregate type → aggregate id → its store (`None`: none).
    stores: HashMap<String, HashMap<String, Option<Uuid>>>,
    remembered: usize,
    metadata: MetadataMemo,
    ahead: Option<Ahead>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(ahead) = self.ahead.take() {
            ahead.rows.abort();
        }
    }
}

/// Where a read is in a slice `(cursor, end]`.
#[derive(Clone, Copy, Debug)]
struct Slice {
    cursor: LogPosition,
    end: LogPosition,
    done: bool,
}

impl Reader {
    fn new(pool: PgPool, filter: ExportFilter) -> Self {
        Self {
            pool,
            filter,
            stores: HashMap::new(),
            remembered: 0,
            metadata: MetadataMemo::default(),
            ahead: None,
        }
    }

    /// Starts reading the batch after `after` up to `end` in a task of its own.
    fn read_ahead(&mut self, after: LogPosition, end: LogPosition) {
        if let Some(stale) = self.ahead.take() {
            stale.rows.abort();
        }
        let pool = self.pool.clone();
        let filter = self.filter.clone();
        let rows = tokio::spawn(async move {
            sqlx::query(BATCH_STATEMENT)
                .bind(after.transaction_id)
                .bind(after.global_position)
                .bind(end.transaction_id)
                .bind(end.global_position)
                .bind(filter.aggregate_type.as_deref())
                .bind(filter.from)
                .bind(filter.to)
                .bind(filter.actor_id.map(|actor| actor.0.to_string()))
                .bind(BATCH)
                .fetch_all(&pool)
                .await
        });
        self.ahead = Some(Ahead { after, end, rows });
    }

    /// Reads the slice's next batch, appends its lines (the filter's store's only, when it
    /// names one) to `out`, moves the cursor past the batch and says how many lines it wrote.
    /// Cancel-safe: the slice moves only once nothing more is awaited, and a batch being read
    /// ahead stays for the next call.
    async fn read(&mut self, slice: &mut Slice, out: &mut Vec<u8>) -> Result<usize, AppError> {
        if slice.done || slice.cursor >= slice.end {
            slice.done = true;
            return Ok(0);
        }
        let ready = self
            .ahead
            .as_ref()
            .is_some_and(|ahead| ahead.after == slice.cursor && ahead.end == slice.end);
        if !ready {
            self.read_ahead(slice.cursor, slice.end);
        }
        let Some(ahead) = self.ahead.as_mut() else {
            return Err(AppError::Internal("no batch is being read".into()));
        };
        let joined = (&mut ahead.rows).await;
        self.ahead = None;
        let rows = joined.map_err(|err| AppError::Internal(err.into()))??;
        let done = (rows.len() as i64) < BATCH;
        let Some(last) = rows.last() else {
            slice.done = done;
            return Ok(0);
        };
        let next = LogPosition {
            transaction_id: last.try_get(0)?,
            global_position: last.try_get(1)?,
        };
        if !done {
            self.read_ahead(next, slice.end);
        }
        let stores = self.stores_of(&rows).await?;
        let wanted = self.filter.store_id.map(|store| store.0);
        out.reserve(rows.len() * 640);
        let mut lines = 0;
        for (row, store_id) in rows.iter().zip(stores) {
            if wanted.is_some() && store_id != wanted {
                continue;
            }
            ExportLine {
                transaction_id: row.try_get(0)?,
                position: row.try_get(1)?,
                recorded_at: row.try_get(2)?,
                aggregate_type: row.try_get(3)?,
                aggregate_id: row.try_get(4)?,
                sequence: row.try_get(5)?,
                event_type: row.try_get(6)?,
                event_version: row.try_get(7)?,
                payload: row.try_get(8)?,
                metadata: row.try_get(9)?,
                store_id,
            }
            .write_with(out, &mut self.metadata);
            lines += 1;
        }
        slice.cursor = next;
        slice.done = done;
        Ok(lines)
    }

    /// The store of each row's aggregate: its own id for a Store, named by the row when it is
    /// the aggregate's first event, remembered from that, or looked up (one statement for the
    /// batch's aggregates whose first event came before the slice).
    async fn stores_of(&mut self, rows: &[PgRow]) -> Result<Vec<Option<Uuid>>, AppError> {
        let mut stores = Vec::with_capacity(rows.len());
        let mut missing: (Vec<String>, Vec<String>) = Default::default();
        for row in rows {
            let aggregate_type: &str = row.try_get(3)?;
            let aggregate_id: &str = row.try_get(4)?;
            let store = if aggregate_type == "Store" {
                Some(aggregate_id.parse().ok())
            } else if row.try_get::<i64, _>(5)? == 1 {
                let store = named_store(row.try_get(6)?, row.try_get(8)?);
                self.remember(aggregate_type, aggregate_id, store);
                Some(store)
            } else {
                let known = self
                    .stores
                    .get(aggregate_type)
                    .and_then(|ids| ids.get(aggregate_id))
                    .copied();
                if known.is_none() {
                    missing.0.push(aggregate_type.to_owned());
                    missing.1.push(aggregate_id.to_owned());
                }
                known
            };
            stores.push(store);
        }
        if !missing.0.is_empty() {
            let found: Vec<(String, String, Option<String>)> = sqlx::query_as(
                "select k.t, k.id, f.payload -> f.event_type ->> 'store_id'
                   from unnest($1::text[], $2::text[]) as k(t, id)
                   left join events f
                     on f.aggregate_type = k.t and f.aggregate_id = k.id and f.sequence = 1",
            )
            .bind(&missing.0)
            .bind(&missing.1)
            .fetch_all(&self.pool)
            .await?;
            let found: HashMap<(String, String), Option<Uuid>> = found
                .into_iter()
                .map(|(t, id, store)| ((t, id), store.and_then(|id| id.parse().ok())))
                .collect();
            // The misses in row order, as they were collected.
            let mut misses = missing.0.into_iter().zip(missing.1);
            for store in stores.iter_mut().filter(|store| store.is_none()) {
                let key = misses.next();
                *store = Some(key.and_then(|key| found.get(&key).copied().flatten()));
            }
            for ((aggregate_type, aggregate_id), store) in found {
                self.remember(&aggregate_type, &aggregate_id, store);
            }
        }
        Ok(stores.into_iter().map(Option::flatten).collect())
    }

    fn remember(&mut self, aggregate_type: &str, aggregate_id: &str, store: Option<Uuid>) {
        if self.remembered >= STORE_CACHE {
            self.stores.clear();
            self.remembered = 0;
        }
        let ids = match self.stores.get_mut(aggregate_type) {
            Some(ids) => ids,
            None => self.stores.entry(aggregate_type.to_owned()).or_default(),
        };
        if ids.insert(aggregate_id.to_owned(), store).is_none() {
            self.remembered += 1;
        }
    }
}

/// A consistent slice of the log being exported: the events after a position, up to the head
/// of the log when the export started, filtered (see the module docs).
pub struct LogExport {
    reader: Reader,
    slice: Slice,
    start: LogPosition,
    lines: u64,
    last: Option<i64>,
}

impl std::fmt::Debug for LogExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogExport")
            .field("filter", &self.reader.filter)
            .field("slice", &self.slice)
            .field("lines", &self.lines)
            .finish_non_exhaustive()
    }
}

impl LogExport {
    /// The slice after `after` (a global position; `0` or `None`: from the beginning) up to the
    /// log's head now. A position no event has is `Invalid` (`after`).
    async fn open(
        pool: PgPool,
        filter: ExportFilter,
        after: Option<i64>,
    ) -> Result<Self, AppError> {
        let start = resolve(&pool, "after", after.unwrap_or(0)).await?;
        let head = GlobalLog::new(pool.clone())
            .head()
            .await?
            .unwrap_or(LogPosition::START);
        Ok(Self {
            reader: Reader::new(pool, filter),
            slice: Slice {
                cursor: start,
                end: head,
                done: head <= start,
            },
            start,
            lines: 0,
            last: None,
        })
    }

    /// Where the slice starts (exclusive).
    pub fn start(&self) -> LogPosition {
        self.start
    }

    /// Where the slice ends (inclusive): the log's head when the export started. A later export
    /// `after` its global position continues with no gap and no duplicate.
    pub fn end(&self) -> LogPosition {
        self.slice.end
    }

    /// The last position read so far (progress through the slice).
    pub fn cursor(&self) -> LogPosition {
        self.slice.cursor
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// The global position of the last line written, if any.
    pub fn last_position(&self) -> Option<i64> {
        self.last
    }

    /// Appends the next batch's lines to `out`: how many, or `None` once the slice is done.
    pub async fn next_batch(&mut self, out: &mut Vec<u8>) -> Result<Option<usize>, AppError> {
        if self.slice.done {
            return Ok(None);
        }
        let before = out.len();
        let lines = self.reader.read(&mut self.slice, out).await?;
        if lines > 0 {
            self.lines += lines as u64;
            self.last = last_line_position(&out[before..]);
        }
        Ok(Some(lines))
    }

    /// The export as a stream of chunks of whole lines, one per batch, read as the stream is
    /// polled (at most one batch in memory). An error ends the stream: what was sent before it
    /// is whole lines, so a reader resumes `after` the last position it received.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, AppError>> + Send + 'static {
        futures::stream::try_unfold(self, |mut export| async move {
            let mut out = Vec::new();
            loop {
                match export.next_batch(&mut out).await? {
                    None => return Ok(None),
                    Some(0) => continue,
                    Some(_) => return Ok(Some((Bytes::from(out), export))),
                }
            }
        })
    }
}

/// The `position` of the last line in `lines` (whole lines, each ending in `\n`).
fn last_line_position(lines: &[u8]) -> Option<i64> {
    let body = lines.strip_suffix(b"\n")?;
    let start = memchr::memrchr(b'\n', body).map_or(0, |at| at + 1);
    let line = body.get(start..)?.strip_prefix(b"{\"position\":")?;
    let end = line.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&line[..end]).ok()?.parse().ok()
}

/// The full log position of global position `global_position` (`0`: before the first event).
async fn resolve(
    pool: &PgPool,
    field: &'static str,
    global_position: i64,
) -> Result<LogPosition, AppError> {
    if global_position < 0 {
        return Err(AppError::invalid(field, "a position is 0 or more"));
    }
    if global_position == 0 {
        return Ok(LogPosition::START);
    }
    projections::log::position_of(pool, global_position)
        .await?
        .ok_or_else(|| {
            AppError::invalid(
                field,
                format!("there is no event at global position {global_position}"),
            )
        })
}

/// The log followed from a position: every event after it, exactly once and in log order, as
/// it becomes visible (see the module docs).
pub struct LogTail {
    reader: Reader,
    cursor: LogPosition,
    slice: Option<Slice>,
    log: GlobalLog,
    events: watch::Receiver<u64>,
    horizon: watch::Receiver<u64>,
    last: Option<i64>,
}

impl std::fmt::Debug for LogTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogTail")
            .field("filter", &self.reader.filter)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl LogTail {
    /// The events after global position `from` (`0`: from the beginning), woken by
    /// `notifications`. A position no event has is `Invalid` (`from`).
    async fn open(
        pool: PgPool,
        filter: ExportFilter,
        from: i64,
        notifications: &Notifications,
    ) -> Result<Self, AppError> {
        let cursor = resolve(&pool, "from", from).await?;
        Ok(Self {
            reader: Reader::new(pool.clone(), filter),
            cursor,
            slice: None,
            log: GlobalLog::new(pool),
            events: notifications.events(),
            horizon: notifications.checkpoints(),
            last: None,
        })
    }

    /// The global position of the last line written, if any: where a restarted tail resumes.
    pub fn last_position(&self) -> Option<i64> {
        self.last
    }

    /// Waits for the next events and appends their lines to `out` (at least one, at most a
    /// batch); how many. Cancel-safe between batches: a cancelled call loses nothing, and a
    /// failed one can be called again.
    pub async fn next_batch(&mut self, out: &mut Vec<u8>) -> Result<usize, AppError> {
        loop {
            if let Some(slice) = &mut self.slice {
                let before = out.len();
                let lines = self.reader.read(slice, out).await?;
                self.cursor = self.cursor.max(slice.cursor);
                if slice.done {
                    // Nothing else of the filtered log is left up to the slice's end.
                    self.cursor = self.cursor.max(slice.end);
                    self.slice = None;
                }
                if lines > 0 {
                    self.last = last_line_position(&out[before..]);
                    return Ok(lines);
                }
                continue;
            }
            // Seen before looking: a commit while we look wakes the wait below at once.
            self.events.borrow_and_update();
            self.horizon.borrow_and_update();
            let head = self.log.head().await?.unwrap_or(LogPosition::START);
            if head > self.cursor {
                self.slice = Some(Slice {
                    cursor: self.cursor,
                    end: head,
                    done: false,
                });
                continue;
            }
            tokio::select! {
                Ok(()) = self.events.changed() => {}
                Ok(()) = self.horizon.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

impl App {
    /// The export of the log `filter` selects, after global position `after`, for `caller`:
    /// a store's slice needs `ViewAuditTrail` there (an auditor's API token is the usual
    /// caller); the whole platform's, a platform admin.
    #[tracing::instrument(skip(self, caller))]
    pub async fn audit_export(
        &self,
        caller: &Caller,
        filter: ExportFilter,
        after: Option<i64>,
    ) -> Result<LogExport, AppError> {
        self.authorize_log_auditor(caller, filter.store_id).await?;
        LogExport::open(self.pool.clone(), filter, after).await
    }

    /// [`App::audit_export`] on the operator's authority (`shopfront audit export`: whoever can
    /// run it holds database credentials anyway).
    pub async fn audit_export_from_console(
        &self,
        filter: ExportFilter,
        after: Option<i64>,
    ) -> Result<LogExport, AppError> {
        LogExport::open(self.pool.clone(), filter, after).await
    }

    /// The log followed after global position `from` on the operator's authority
    /// (`shopfront audit tail`), woken by `notifications`.
    pub async fn audit_tail_from_console(
        &self,
        filter: ExportFilter,
        from: i64,
        notifications: &Notifications,
    ) -> Result<LogTail, AppError> {
        LogTail::open(self.pool.clone(), filter, from, notifications).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(payload: &str, metadata: &str) -> ExportLine<'static> {
        let payload: &'static str = Box::leak(payload.to_owned().into_boxed_str());
        let metadata: &'static str = Box::leak(metadata.to_owned().into_boxed_str());
        ExportLine {
            position: 42,
            transaction_id: 7_000_001,
            recorded_at: "2026-11-29T22:10:03.120005Z".parse().expect("time"),
            store_id: Some(Uuid::nil()),
            aggregate_type: "Order",
            aggregate_id: "0199a\"b\\c\u{1}",
            sequence: 3,
            event_type: "OrderPaid",
            event_version: "1.0",
            payload,
            metadata,
        }
    }

    fn written(line: &ExportLine<'_>) -> String {
        let mut out = Vec::new();
        line.write_to(&mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn a_line_is_one_json_object_with_every_field_and_the_stored_texts_unchanged() {
        let text = written(&line(
            r#"{"OrderPaid":{"at":"2026-11-29T22:10:03Z","amount":1.5e3}}"#,
            r#"{"actor_role":"OWNER","channel":"api","request_id":"r1"}"#,
        ));
        assert!(text.ends_with("}\n") && text.matches('\n').count() == 1);
        assert!(text
            .contains(r#""payload":{"OrderPaid":{"at":"2026-11-29T22:10:03Z","amount":1.5e3}}"#));
        assert!(
            text.contains(r#""metadata":{"actor_role":"OWNER","channel":"api","request_id":"r1"}"#)
        );
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(value["position"], 42);
        assert_eq!(value["transaction_id"], 7_000_001);
        assert_eq!(value["recorded_at"], "2026-11-29T22:10:03.120005Z");
        assert_eq!(value["store_id"], Uuid::nil().to_string());
        assert_eq!(value["aggregate_id"], "0199a\"b\\c\u{1}");
        assert_eq!(value["sequence"], 3);
        assert_eq!(value["event_type"], "OrderPaid");
        assert_eq!(value["event_version"], "1.0");
        assert_eq!(last_line_position(text.as_bytes()), Some(42));
    }

    #[test]
    fn personal_data_in_clear_never_leaves_and_stored_text_stays_on_one_line() {
        let mut legacy = line(
            r#"{"AccountRegistered":{"telegram_user_id":5550001234}}"#,
            "{}",
        );
        legacy.aggregate_type = "Account";
        legacy.event_type = "AccountRegistered";
        legacy.store_id = None;
        let text = written(&legacy);
        assert!(
            !text.contains("5550001234") && !text.contains("store_id"),
            "{text}"
        );
        assert!(text.contains(r#""payload":null"#));

        let older = written(&line(
            "{\"OrderPaid\":\n  {}}",
            r#"{"client_ip":"203.0.113.9","actor_role":"CUSTOMER","user_agent":"curl/8"}"#,
        ));
        assert_eq!(older.matches('\n').count(), 1, "{older}");
        assert!(
            !older.contains("203.0.113.9") && !older.contains("curl/8"),
            "{older}"
        );
        let value: serde_json::Value = serde_json::from_str(&older).expect("json");
        assert_eq!(
            value["metadata"],
            serde_json::json!({"actor_role": "CUSTOMER"})
        );
        assert_eq!(value["payload"], serde_json::json!({"OrderPaid": {}}));
    }

    #[test]
    fn the_store_an_event_names_is_read_under_its_type_only() {
        let store = Uuid::now_v7();
        let placed = format!(
            r#"{{"OrderPlaced":{{"order_id":"x","lines":[{{"store_id":"nope"}}],"store_id":"{store}"}}}}"#
        );
        assert_eq!(named_store("OrderPlaced", &placed), Some(store));
        assert_eq!(named_store("OrderPaid", &placed), None);
        assert_eq!(
            named_store("AccountRegistered", r#"{"AccountRegistered":{"a":1}}"#),
            None
        );
        assert_eq!(named_store("StoreClosed", r#""StoreClosed""#), None);
        assert_eq!(named_store("X", r#"{"X":{"store_id":"not a uuid"}}"#), None);
    }

    #[test]
    fn times_are_fixed_width_microseconds_in_utc() {
        let mut out = Vec::new();
        write_timestamp(&mut out, "2026-01-02T03:04:05Z".parse().expect("time"));
        assert_eq!(out, b"2026-01-02T03:04:05.000000Z");
        out.clear();
        write_timestamp(
            &mut out,
            "0999-12-31T23:59:59.999999Z".parse().expect("time"),
        );
        assert_eq!(out, b"0999-12-31T23:59:59.999999Z");
    }
}
