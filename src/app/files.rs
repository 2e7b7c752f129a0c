//! Blob storage for uploaded files (payment receipts), content-addressed by SHA-256 through
//! `object_store`: a local directory by default, memory in some tests; any other
//! `object_store` backend (S3, GCS, Azure) fits behind the same type.
//!
//! Content addressing makes a store idempotent (the same bytes land at the same key, so a
//! retried upload writes nothing new) and lets the verifier see that two receipts are the same
//! file.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutOptions, PutPayload};
use sha2::{Digest, Sha256};

use super::AppError;

/// Media types accepted for receipts, decided from the content (never from a name or a
/// client-declared type).
pub const RECEIPT_MEDIA_TYPES: [&str; 4] =
    ["image/jpeg", "image/png", "image/webp", "application/pdf"];

/// A file as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFile {
    pub storage_key: String,
    /// 64 lowercase hex characters.
    pub sha256: String,
    pub size_bytes: u64,
    pub media_type: String,
}

/// Where uploaded files live.
#[derive(Clone, Debug)]
pub struct FileStore {
    store: Arc<dyn ObjectStore>,
}

impl FileStore {
    /// Files under `dir` (created if missing).
    pub fn local(dir: &Path) -> Result<Self, AppError> {
        std::fs::create_dir_all(dir).map_err(|e| AppError::Internal(Box::new(e)))?;
        let store =
            LocalFileSystem::new_with_prefix(dir).map_err(|e| AppError::Internal(Box::new(e)))?;
        Ok(Self {
            store: Arc::new(store),
        })
    }

    /// Files in memory (lost when the process ends): for tests and benchmarks.
    pub fn in_memory() -> Self {
        Self {
            store: Arc::new(InMemory::new()),
        }
    }

    /// Stores `content` under its SHA-256, after checking its type from the bytes themselves;
    /// refused with `UnsupportedMediaType` when it is not one of `accepted`.
    pub async fn store(&self, content: Bytes, accepted: &[&str]) -> Result<StoredFile, AppError> {
        let media_type = sniff(&content)
            .filter(|t| accepted.contains(t))
            .ok_or(AppError::UnsupportedMediaType)?;
        let sha256 = hex::encode(Sha256::digest(&content));
        let storage_key = format!("sha256/{}/{}", &sha256[..2], sha256);
        let size_bytes = content.len() as u64;
        let path = ObjectPath::from(storage_key.as_str());
        // Same key, same bytes: writing again is harmless (and rare: only duplicates).
        self.store
            .put_opts(
                &path,
                PutPayload::from_bytes(content),
                PutOptions::default(),
            )
            .await
            .map_err(storage_error)?;
        Ok(StoredFile {
            storage_key,
            sha256,
            size_bytes,
            media_type: media_type.to_owned(),
        })
    }

    /// The content stored under `storage_key`.
    pub async fn load(&self, storage_key: &str) -> Result<Bytes, AppError> {
        let path = ObjectPath::from(storage_key);
        let result = self
            .store
            .get_opts(&path, GetOptions::default())
            .await
            .map_err(storage_error)?;
        result.bytes().await.map_err(storage_error)
    }
}

impl FileStore {
    /// Deletes the content stored under `storage_key` (erasure); a file already gone is fine.
    pub async fn delete(&self, storage_key: &str) -> Result<(), AppError> {
        match self.store.delete(&ObjectPath::from(storage_key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(storage_error(err)),
        }
    }
}

/// The media type of `content` judged from its first bytes, if recognised.
pub fn sniff(content: &[u8]) -> Option<&'static str> {
    infer::get(content).map(|kind| kind.mime_type())
}

fn storage_error(err: object_store::Error) -> AppError {
    AppError::Internal(Box::new(err))
}
