//! Writing rows with binary `COPY … FROM STDIN`.
//!
//! A read model writes each batch's rows in one `COPY` per table instead of an `insert` from
//! a JSON recordset: nothing is serialised to JSON and parsed back (except `jsonb` columns,
//! whose binary form is their text), timestamps and ids travel as their binary values, and the
//! server takes the rows without planning a statement. The live runtime and rebuilds run the
//! same code, so both write identical rows.
//!
//! Binary `COPY` takes each value in the exact binary form of its column's type (an `int8`
//! sent for an `int4` column is an error, not a cast): a row type lists its columns in the
//! order of its fields, each field of the Rust type that encodes as its column's type.

use serde::Serialize;
use sqlx::encode::IsNull;
use sqlx::postgres::{PgArgumentBuffer, Postgres};
use sqlx::{Encode, PgConnection};

/// A row written with binary `COPY`: its columns (all of them that it sets; the others take
/// their defaults) and how to encode its fields in that order.
pub(crate) trait CopyRow {
    const COLUMNS: &'static [&'static str];

    fn encode(&self, out: &mut CopyRows);
}

/// Implements [`CopyRow`] for a struct whose fields are named like its table's columns; a field
/// marked `json` is written as `jsonb` from its serde form.
macro_rules! copy_row {
    ($row:ty { $($field:ident $(: $json:ident)?),* $(,)? }) => {
        impl $crate::read_models::copy_in::CopyRow for $row {
            const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),*];

            fn encode(&self, out: &mut $crate::read_models::copy_in::CopyRows) {
                out.row(Self::COLUMNS.len());
                $( copy_row!(@field out, self.$field $(, $json)?); )*
            }
        }
    };
    (@field $out:ident, $value:expr) => { $out.field(&$value) };
    (@field $out:ident, $value:expr, json) => { $out.json(&$value) };
}
pub(crate) use copy_row;

/// The binary `COPY` data of some rows, built in memory.
pub(crate) struct CopyRows {
    buffer: PgArgumentBuffer,
    rows: usize,
    /// The first value that could not be encoded (reported when the rows are written).
    failed: Option<String>,
}

impl CopyRows {
    pub(crate) fn new() -> Self {
        let mut buffer = PgArgumentBuffer::default();
        buffer.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buffer.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buffer.extend_from_slice(&0i32.to_be_bytes()); // no header extension
        Self {
            buffer,
            rows: 0,
            failed: None,
        }
    }

    /// Starts a row of `fields` values.
    pub(crate) fn row(&mut self, fields: usize) {
        self.rows += 1;
        self.buffer
            .extend_from_slice(&(fields as i16).to_be_bytes());
    }

    /// One value, in the binary form sqlx binds it in (`None` is SQL null).
    pub(crate) fn field<'q, T: Encode<'q, Postgres>>(&mut self, value: &T) {
        let at = self.start_value();
        match value.encode_by_ref(&mut self.buffer) {
            Ok(IsNull::No) => self.end_value(at),
            Ok(IsNull::Yes) => self.null_value(at),
            Err(err) => {
                self.failed.get_or_insert_with(|| err.to_string());
                self.null_value(at);
            }
        }
    }

    /// A `jsonb` value from its serde form (`None` is SQL null).
    pub(crate) fn json<T: Serialize>(&mut self, value: &T) {
        let at = self.start_value();
        self.buffer.push(1); // jsonb's binary format version
        let writer: &mut Vec<u8> = &mut self.buffer;
        match serde_json::to_writer(&mut *writer, value) {
            Ok(()) if writer.len() == at + 4 + 1 + 4 && writer.ends_with(b"null") => {
                self.null_value(at)
            }
            Ok(()) => self.end_value(at),
            Err(err) => {
                self.failed.get_or_insert_with(|| err.to_string());
                self.null_value(at);
            }
        }
    }

    fn start_value(&mut self) -> usize {
        let at = self.buffer.len();
        self.buffer.extend_from_slice(&[0; 4]);
        at
    }

    fn end_value(&mut self, at: usize) {
        let length = (self.buffer.len() - at - 4) as i32;
        self.buffer[at..at + 4].copy_from_slice(&length.to_be_bytes());
    }

    fn null_value(&mut self, at: usize) {
        self.buffer.truncate(at);
        self.buffer.extend_from_slice(&(-1i32).to_be_bytes());
    }

    /// Writes the rows into `table` (by unqualified name, so a rebuild's `search_path` applies)
    /// in one `COPY`.
    pub(crate) async fn write(
        mut self,
        conn: &mut PgConnection,
        table: &str,
        columns: &[&str],
    ) -> Result<(), sqlx::Error> {
        if self.rows == 0 {
            return Ok(());
        }
        if let Some(failed) = self.failed {
            return Err(sqlx::Error::Encode(
                format!("a value for {table} does not encode: {failed}").into(),
            ));
        }
        self.buffer.extend_from_slice(&(-1i16).to_be_bytes()); // trailer
        let mut copy = conn
            .copy_in_raw(&format!(
                "copy {table} ({}) from stdin with (format binary)",
                columns.join(", ")
            ))
            .await?;
        let bytes: Vec<u8> = std::mem::take(&mut *self.buffer);
        for chunk in bytes.chunks(1 << 20) {
            if let Err(err) = copy.send(chunk).await {
                let _ = copy.abort("sending failed").await;
                return Err(err);
            }
        }
        copy.finish().await?;
        Ok(())
    }
}

/// Inserts `rows` into `table` with one binary `COPY`.
pub(crate) async fn copy_rows<T: CopyRow>(
    conn: &mut PgConnection,
    table: &str,
    rows: impl IntoIterator<Item = T>,
) -> Result<(), sqlx::Error> {
    let mut out = CopyRows::new();
    for row in rows {
        row.encode(&mut out);
    }
    out.write(conn, table, T::COLUMNS).await
}

impl<T: CopyRow> CopyRow for &T {
    const COLUMNS: &'static [&'static str] = T::COLUMNS;

    fn encode(&self, out: &mut CopyRows) {
        (**self).encode(out)
    }
}
