//! Reading `COPY … TO STDOUT WITH (FORMAT BINARY)` output: the fastest way out of Postgres for
//! a walk over the whole log (no per-row protocol messages, no text escaping, JSON as stored).
//! The format: an 11-byte signature, flags, a header extension, then per tuple a 16-bit field
//! count and per field a 32-bit length (−1 for NULL) and its bytes; a count of −1 ends it.

use bytes::Bytes;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Why a COPY stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("reading from the database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the COPY stream is not in binary format")]
    NotBinary,
    #[error("the COPY stream ended before its trailer")]
    Truncated,
    #[error("column {0} has an unexpected shape")]
    Column(usize),
    #[error("stopped: nobody waits for the result any more")]
    Cancelled,
}

/// Pulls binary COPY tuples out of a stream of chunks (`next_chunk` returns `None` at the end).
pub struct CopyReader<S> {
    next_chunk: S,
    buf: Vec<u8>,
    pos: usize,
    started: bool,
    finished: bool,
    fields: Vec<Option<(usize, usize)>>,
}

/// One tuple, borrowed from the reader's buffer.
pub struct Tuple<'a> {
    buf: &'a [u8],
    fields: &'a [Option<(usize, usize)>],
}

impl<'a> Tuple<'a> {
    /// Column `i`'s bytes (`None`: NULL or no such column).
    pub fn bytes(&self, i: usize) -> Option<&'a [u8]> {
        self.fields
            .get(i)
            .copied()
            .flatten()
            .map(|(start, end)| &self.buf[start..end])
    }

    /// Column `i` as a binary `bigint` (or `timestamptz`, which is one underneath).
    pub fn i64(&self, i: usize) -> Result<i64, CopyError> {
        let bytes: [u8; 8] = self
            .bytes(i)
            .and_then(|b| b.try_into().ok())
            .ok_or(CopyError::Column(i))?;
        Ok(i64::from_be_bytes(bytes))
    }

    /// Column `i`, not NULL.
    pub fn required(&self, i: usize) -> Result<&'a [u8], CopyError> {
        self.bytes(i).ok_or(CopyError::Column(i))
    }
}

impl<S> CopyReader<S>
where
    S: FnMut() -> Result<Option<Bytes>, CopyError>,
{
    pub fn new(next_chunk: S) -> Self {
        Self {
            next_chunk,
            buf: Vec::with_capacity(1 << 20),
            pos: 0,
            started: false,
            finished: false,
            fields: Vec::with_capacity(16),
        }
    }

    /// The next tuple, or `None` after the trailer.
    pub fn next_tuple(&mut self) -> Result<Option<Tuple<'_>>, CopyError> {
        if self.finished {
            return Ok(None);
        }
        loop {
            if !self.started {
                if let Some(header) = self.header_length()? {
                    self.pos += header;
                    self.started = true;
                } else {
                    self.refill()?;
                }
                continue;
            }
            match self.scan_tuple() {
                Scan::Trailer => {
                    self.finished = true;
                    return Ok(None);
                }
                Scan::Tuple(end) => {
                    self.pos = end;
                    return Ok(Some(Tuple {
                        buf: &self.buf,
                        fields: &self.fields,
                    }));
                }
                Scan::Incomplete => self.refill()?,
            }
        }
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// The header's length once all of it is buffered.
    fn header_length(&self) -> Result<Option<usize>, CopyError> {
        let data = self.available();
        if data.len() < 19 {
            return Ok(None);
        }
        if &data[..11] != SIGNATURE {
            return Err(CopyError::NotBinary);
        }
        let extension = u32::from_be_bytes([data[15], data[16], data[17], data[18]]) as usize;
        Ok((data.len() >= 19 + extension).then_some(19 + extension))
    }

    /// Finds the tuple at `pos` (field ranges into `fields`) if all of it is buffered.
    fn scan_tuple(&mut self) -> Scan {
        let data = &self.buf[self.pos..];
        if data.len() < 2 {
            return Scan::Incomplete;
        }
        let count = i16::from_be_bytes([data[0], data[1]]);
        if count == -1 {
            return Scan::Trailer;
        }
        self.fields.clear();
        let mut at = self.pos + 2;
        for _ in 0..count.max(0) {
            let Some(length) = self.buf.get(at..at + 4) else {
                return Scan::Incomplete;
            };
            let length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
            at += 4;
            if length < 0 {
                self.fields.push(None);
                continue;
            }
            let end = at + length as usize;
            if end > self.buf.len() {
                return Scan::Incomplete;
            }
            self.fields.push(Some((at, end)));
            at = end;
        }
        Scan::Tuple(at)
    }

    fn refill(&mut self) -> Result<(), CopyError> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        match (self.next_chunk)()? {
            Some(chunk) => {
                self.buf.extend_from_slice(&chunk);
                Ok(())
            }
            None => Err(CopyError::Truncated),
        }
    }
}

enum Scan {
    Tuple(usize),
    Trailer,
    Incomplete,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_of(tuples: &[&[Option<&[u8]>]]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        for tuple in tuples {
            out.extend_from_slice(&(tuple.len() as i16).to_be_bytes());
            for field in *tuple {
                match field {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(bytes) => {
                        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                        out.extend_from_slice(bytes);
                    }
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn tuples_split_across_any_chunk_boundary_read_the_same() {
        let seven = 7i64.to_be_bytes();
        let data = copy_of(&[
            &[Some(&seven), Some(b"hello"), None],
            &[Some(&seven), Some(b""), Some(b"{\"a\":1}")],
        ]);
        for chunk in 1..data.len() {
            let mut chunks = data.chunks(chunk).map(Bytes::copy_from_slice);
            let mut reader = CopyReader::new(|| Ok(chunks.next()));
            let first = reader.next_tuple().unwrap().unwrap();
            assert_eq!(first.i64(0).unwrap(), 7);
            assert_eq!(first.bytes(1), Some(&b"hello"[..]));
            assert_eq!(first.bytes(2), None);
            let second = reader.next_tuple().unwrap().unwrap();
            assert_eq!(second.bytes(1), Some(&b""[..]));
            assert_eq!(second.bytes(2), Some(&b"{\"a\":1}"[..]));
            assert!(reader.next_tuple().unwrap().is_none());
        }
    }

    #[test]
    fn a_stream_cut_short_is_an_error_not_an_end() {
        let data = copy_of(&[&[Some(b"x")]]);
        let cut = Bytes::copy_from_slice(&data[..data.len() - 2]);
        let mut once = Some(cut);
        let mut reader = CopyReader::new(|| Ok(once.take()));
        assert!(reader.next_tuple().unwrap().is_some());
        assert!(matches!(reader.next_tuple(), Err(CopyError::Truncated)));
    }

    #[test]
    fn text_format_is_refused() {
        let mut once = Some(Bytes::from_static(b"1\tsome text\n3\tmore text\n\\.\n"));
        let mut reader = CopyReader::new(|| Ok(once.take()));
        assert!(matches!(reader.next_tuple(), Err(CopyError::NotBinary)));
    }
}
