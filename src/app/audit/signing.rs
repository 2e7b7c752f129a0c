//! The checkpoint signing key: from configuration (64 hex digits, the ed25519 seed), else from
//! a key file, generated there on first run (mode 0600). Every instance that may lead the
//! sealer must hold the same key (configure it, or share the file), or checkpoints are signed
//! by several keys — each still verifies, but auditors must trust each.

use std::io::Write;
use std::path::Path;

use ed25519_dalek::SigningKey;
use secrecy::{ExposeSecret, SecretString};

/// Why the key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the audit signing key must be 64 hex digits (a 32-byte ed25519 seed)")]
    Malformed,
    #[error("the audit signing key file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
}

/// The configured key, or the one in `file` (generated and written there if there is none).
pub fn load_or_generate(
    configured: Option<&SecretString>,
    file: &Path,
) -> Result<SigningKey, KeyError> {
    if let Some(secret) = configured {
        return parse(secret.expose_secret());
    }
    let file_error = |source| KeyError::File {
        path: file.display().to_string(),
        source,
    };
    match std::fs::read_to_string(file) {
        Ok(text) => return parse(&text),
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(file_error(err)),
        Err(_) => {}
    }
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(file_error)?;
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(file) {
        Ok(mut out) => {
            writeln!(out, "{}", hex::encode(key.to_bytes())).map_err(file_error)?;
            tracing::info!(file = %file.display(), public_key = %public_key_hex(&key),
                "generated the audit checkpoint signing key");
            Ok(key)
        }
        // Another process made it first: use theirs.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            parse(&std::fs::read_to_string(file).map_err(file_error)?)
        }
        Err(err) => Err(file_error(err)),
    }
}

/// The public half, hex (as checkpoints and `/api/v1/audit/public-key` show it).
pub fn public_key_hex(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().as_bytes())
}

fn parse(text: &str) -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| KeyError::Malformed)?;
    Ok(SigningKey::from_bytes(&seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_generated_once_and_then_read_back() {
        let dir = std::env::temp_dir().join(format!("shopfront-key-{}", uuid::Uuid::now_v7()));
        let file = dir.join("nested").join("audit.key");
        let first = load_or_generate(None, &file).unwrap();
        let second = load_or_generate(None, &file).unwrap();
        assert_eq!(first.to_bytes(), second.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_configured_key_wins_and_a_bad_one_is_refused() {
        let seed = SecretString::from("11".repeat(32));
        let key = load_or_generate(Some(&seed), Path::new("/nonexistent/never-read")).unwrap();
        assert_eq!(key.to_bytes(), [0x11; 32]);
        let bad = SecretString::from("xyz".to_owned());
        assert!(matches!(
            load_or_generate(Some(&bad), Path::new("/nonexistent")),
            Err(KeyError::Malformed)
        ));
    }
}
