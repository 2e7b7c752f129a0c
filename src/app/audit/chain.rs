//! The hash chain over the global log (docs/auditing.md): what is hashed, how, and how a
//! checkpoint is signed. Pure functions; the sealer (`sealer.rs`) and the verifier
//! (`verify.rs`) both use them, so the two can never disagree on a byte.
//!
//! `h_0` is 32 zero bytes and `h_n = SHA-256(h_{n-1} ‖ canonical(e_n))`, where `e_n` is the
//! n-th event in log order (`(transaction_id, global_position)`, the order every reader
//! follows) and `canonical(e)` is, each integer as 8 big-endian bytes and each string or JSON
//! text as a 4-byte big-endian length and its UTF-8 bytes:
//!
//! ```text
//! "SFE1" transaction_id global_position aggregate_type aggregate_id sequence
//!        event_type event_version canonical_json(payload) canonical_json(metadata)
//!        recorded_at (microseconds since 1970-01-01 UTC)
//! ```
//!
//! Canonical JSON is the compact form with every object's keys in byte order (as serde_json
//! writes it), behind a 0x00 byte; a payload stored with other spacing or key order hashes the
//! same, a changed value does not. JSON that Postgres accepts but serde_json cannot read (a
//! number beyond f64, nesting deeper than 128) is hashed as stored, behind a 0x01 byte, so no
//! stored event can stop the sealer. Payloads stay as stored: sealed personal data is hashed sealed, so erasing a
//! person (deleting their key) leaves every hash intact.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A chain hash.
pub type Hash = [u8; 32];

/// The hash before the first event.
pub const GENESIS: Hash = [0; 32];

/// Postgres counts timestamps from 2000-01-01; the chain from 1970-01-01 (microseconds).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// One event as the chain sees it: the stored columns, JSON as stored text.
#[derive(Clone, Copy, Debug)]
pub struct ChainEvent<'a> {
    pub transaction_id: i64,
    pub global_position: i64,
    pub aggregate_type: &'a [u8],
    pub aggregate_id: &'a [u8],
    pub sequence: i64,
    pub event_type: &'a [u8],
    pub event_version: &'a [u8],
    pub payload: &'a [u8],
    pub metadata: &'a [u8],
    /// Microseconds since 1970-01-01 UTC.
    pub recorded_at_micros: i64,
}

/// Writes `event`'s canonical bytes into `out` (cleared first); `scratch` is reused between
/// calls so a long walk allocates little.
pub fn canonical(event: &ChainEvent<'_>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"SFE1");
    out.extend_from_slice(&event.transaction_id.to_be_bytes());
    out.extend_from_slice(&event.global_position.to_be_bytes());
    put_bytes(out, event.aggregate_type);
    put_bytes(out, event.aggregate_id);
    out.extend_from_slice(&event.sequence.to_be_bytes());
    put_bytes(out, event.event_type);
    put_bytes(out, event.event_version);
    put_json(out, event.payload);
    put_json(out, event.metadata);
    out.extend_from_slice(&event.recorded_at_micros.to_be_bytes());
}

/// `h_n` from `h_{n-1}` and the n-th event's canonical bytes.
pub fn next_hash(previous: &Hash, canonical: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(canonical);
    hasher.finalize().into()
}

/// Microseconds since 1970 from Postgres' binary `timestamptz` (microseconds since 2000);
/// wrapping, so distinct stored values (even `infinity`) stay distinct.
pub fn micros_from_pg(pg_micros: i64) -> i64 {
    pg_micros.wrapping_add(PG_EPOCH_OFFSET_MICROS)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Columns are far below 4 GiB (Postgres caps a value at 1 GiB).
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_json(out: &mut Vec<u8>, text: &[u8]) {
    let length_at = out.len();
    out.extend_from_slice(&[0; 4]);
    match serde_json::from_slice::<Value>(text) {
        Ok(value) => {
            out.push(0);
            write_canonical(&value, out);
        }
        Err(_) => {
            out.push(1);
            out.extend_from_slice(text);
        }
    }
    let length = (out.len() - length_at - 4) as u32;
    out[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
}

/// Compact JSON with object keys in byte order.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            out.push(b'{');
            let sorted = map
                .keys()
                .zip(map.keys().skip(1))
                .all(|(a, b)| a.as_bytes() < b.as_bytes());
            if sorted {
                for (i, (key, value)) in map.iter().enumerate() {
                    write_member(i, key, value, out);
                }
            } else {
                let mut members: Vec<(&String, &Value)> = map.iter().collect();
                members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                for (i, (key, value)) in members.into_iter().enumerate() {
                    write_member(i, key, value, out);
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => {
            // Writing a scalar into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

fn write_member(i: usize, key: &str, value: &Value, out: &mut Vec<u8>) {
    if i > 0 {
        out.push(b',');
    }
    let _ = serde_json::to_writer(&mut *out, key);
    out.push(b':');
    write_canonical(value, out);
}

/// A signed statement "after `chain_index` events, the last at `position`, the chain hash was
/// `hash`". Exported as one JSON object per line; anyone holding the public key can check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Checkpoint {
    /// How many events the chain holds at this point (the n of `h_n`).
    pub chain_index: i64,
    /// The n-th event's global position.
    pub global_position: i64,
    /// The n-th event's transaction id (its place in log order).
    pub transaction_id: i64,
    /// `h_n`, hex.
    pub hash: String,
    pub signed_at: chrono::DateTime<chrono::Utc>,
    /// The ed25519 public key that signed it, hex.
    pub public_key: String,
    /// The ed25519 signature over [`Checkpoint::message`], hex.
    pub signature: String,
}

/// Why a checkpoint does not check out.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("the checkpoint's {0} is not valid hex of the right length")]
    Malformed(&'static str),
    #[error("the checkpoint's signature does not verify with its public key")]
    BadSignature,
}

impl Checkpoint {
    /// Signs `(chain_index, position, hash)` with `key`.
    pub fn sign(
        key: &SigningKey,
        chain_index: i64,
        transaction_id: i64,
        global_position: i64,
        hash: &Hash,
        signed_at: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        let message = message(
            chain_index,
            transaction_id,
            global_position,
            hash,
            signed_at,
        );
        Self {
            chain_index,
            global_position,
            transaction_id,
            hash: hex::encode(hash),
            signed_at,
            public_key: hex::encode(key.verifying_key().as_bytes()),
            signature: hex::encode(key.sign(&message).to_bytes()),
        }
    }

    /// The chain hash it states.
    pub fn hash(&self) -> Result<Hash, CheckpointError> {
        decode_array(&self.hash).ok_or(CheckpointError::Malformed("hash"))
    }

    /// Checks the signature against the checkpoint's own public key (whether that key is one
    /// to trust is the caller's question).
    pub fn verify_signature(&self) -> Result<(), CheckpointError> {
        let key: [u8; 32] =
            decode_array(&self.public_key).ok_or(CheckpointError::Malformed("public_key"))?;
        let key =
            VerifyingKey::from_bytes(&key).map_err(|_| CheckpointError::Malformed("public_key"))?;
        let signature: [u8; 64] =
            decode_array(&self.signature).ok_or(CheckpointError::Malformed("signature"))?;
        let message = message(
            self.chain_index,
            self.transaction_id,
            self.global_position,
            &self.hash()?,
            self.signed_at,
        );
        key.verify(&message, &Signature::from_bytes(&signature))
            .map_err(|_| CheckpointError::BadSignature)
    }
}

/// The bytes a checkpoint's signature covers (its time too: a forged time cannot hold back
/// the next time-based checkpoint unnoticed).
fn message(
    chain_index: i64,
    transaction_id: i64,
    global_position: i64,
    hash: &Hash,
    signed_at: chrono::DateTime<chrono::Utc>,
) -> Vec<u8> {
    let mut message = Vec::with_capacity(64 + 32);
    message.extend_from_slice(b"shopfront audit checkpoint v1\n");
    message.extend_from_slice(&chain_index.to_be_bytes());
    message.extend_from_slice(&transaction_id.to_be_bytes());
    message.extend_from_slice(&global_position.to_be_bytes());
    message.extend_from_slice(hash);
    message.extend_from_slice(&signed_at.timestamp_micros().to_be_bytes());
    message
}

fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut bytes = [0; N];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(payload: &'a [u8], metadata: &'a [u8]) -> ChainEvent<'a> {
        ChainEvent {
            transaction_id: 7,
            global_position: 3,
            aggregate_type: b"Order",
            aggregate_id: b"0190",
            sequence: 1,
            event_type: b"OrderPlaced",
            event_version: b"1.0",
            payload,
            metadata,
            recorded_at_micros: 1_700_000_000_000_000,
        }
    }

    fn hash_of(event: &ChainEvent<'_>) -> Hash {
        let mut bytes = Vec::new();
        canonical(event, &mut bytes);
        next_hash(&GENESIS, &bytes)
    }

    #[test]
    fn spacing_and_key_order_do_not_change_the_hash_but_a_value_does() {
        let stored = hash_of(&event(br#"{"a":1,"b":{"c":[1,2],"d":"x"}}"#, b"{}"));
        let respaced = hash_of(&event(
            br#"{ "b" : { "d":"x", "c":[1, 2] }, "a": 1 }"#,
            b"{ }",
        ));
        let changed = hash_of(&event(br#"{"a":2,"b":{"c":[1,2],"d":"x"}}"#, b"{}"));
        assert_eq!(stored, respaced);
        assert_ne!(stored, changed);
    }

    #[test]
    fn every_column_is_covered() {
        let base = event(b"{}", b"{}");
        let original = hash_of(&base);
        let variants = [
            ChainEvent {
                transaction_id: 8,
                ..base
            },
            ChainEvent {
                global_position: 4,
                ..base
            },
            ChainEvent {
                aggregate_type: b"Stock",
                ..base
            },
            ChainEvent {
                aggregate_id: b"0191",
                ..base
            },
            ChainEvent {
                sequence: 2,
                ..base
            },
            ChainEvent {
                event_type: b"OrderPaid",
                ..base
            },
            ChainEvent {
                event_version: b"1.1",
                ..base
            },
            ChainEvent {
                metadata: br#"{"a":1}"#,
                ..base
            },
            ChainEvent {
                recorded_at_micros: base.recorded_at_micros + 1,
                ..base
            },
        ];
        for variant in variants {
            assert_ne!(hash_of(&variant), original, "{variant:?}");
        }
    }

    #[test]
    fn json_serde_cannot_read_is_hashed_as_stored_and_still_covered() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let huge = hash_of(&event(br#"{"x":1e400}"#, b"{}"));
        assert_ne!(huge, hash_of(&event(br#"{"x":1e401}"#, b"{}")));
        assert_ne!(
            hash_of(&event(deep.as_bytes(), b"{}")),
            hash_of(&event(b"[1]", b"{}"))
        );
    }

    #[test]
    fn fields_cannot_slide_into_each_other() {
        // Without length prefixes, "Ord"+"er0190" and "Order"+"0190" would hash the same.
        let a = ChainEvent {
            aggregate_type: b"Ord",
            aggregate_id: b"er0190",
            ..event(b"{}", b"{}")
        };
        assert_ne!(hash_of(&a), hash_of(&event(b"{}", b"{}")));
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_a_changed_one_does_not() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let checkpoint = Checkpoint::sign(&key, 10, 99, 12, &[5; 32], chrono::Utc::now());
        assert_eq!(checkpoint.verify_signature(), Ok(()));
        let moved = Checkpoint {
            global_position: 13,
            ..checkpoint.clone()
        };
        assert_eq!(moved.verify_signature(), Err(CheckpointError::BadSignature));
        let rehashed = Checkpoint {
            hash: hex::encode([6; 32]),
            ..checkpoint.clone()
        };
        assert_eq!(
            rehashed.verify_signature(),
            Err(CheckpointError::BadSignature)
        );
        let retimed = Checkpoint {
            signed_at: checkpoint.signed_at + chrono::Duration::days(30_000),
            ..checkpoint.clone()
        };
        assert_eq!(
            retimed.verify_signature(),
            Err(CheckpointError::BadSignature)
        );
        let garbled = Checkpoint {
            signature: "zz".into(),
            ..checkpoint
        };
        assert_eq!(
            garbled.verify_signature(),
            Err(CheckpointError::Malformed("signature"))
        );
    }
}
