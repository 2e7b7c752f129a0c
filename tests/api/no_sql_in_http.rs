//! The HTTP adapter holds no SQL (ARCHITECTURE rule 6): read models own their queries
//! (`projections::read_models::*::queries`), the application layer the queries of its own
//! tables. A scan of `src/http/` and `src/console/` keeps it that way.

use std::path::{Path, PathBuf};

/// Calls that run SQL, or derive row types for it.
const SQL_CALLS: &[&str] = &[
    "sqlx::query",
    "query_as(",
    "query_as::<",
    "query_scalar(",
    "query_scalar::<",
    "sqlx::FromRow",
    "FromRow)",
    ".execute(",
    ".fetch_one(",
    ".fetch_all(",
    ".fetch_optional(",
];

/// What in `source` looks like SQL: a call that runs it, or a string literal holding it.
fn sql_in(source: &str) -> Vec<String> {
    let mut found: Vec<String> = SQL_CALLS
        .iter()
        .filter(|call| source.contains(*call))
        .map(|call| format!("calls `{call}`"))
        .collect();
    for literal in string_literals(source) {
        let text = literal.to_lowercase().replace(['\n', '\\'], " ");
        let words: Vec<&str> = text.split_whitespace().collect();
        let has = |a: &str, b: &str| words.windows(2).any(|pair| pair[0] == a && pair[1] == b);
        let statement = (words.contains(&"select") && words.contains(&"from"))
            || has("insert", "into")
            || has("delete", "from")
            || (words.contains(&"update") && words.contains(&"set"))
            || has("on", "conflict");
        if statement {
            found.push(format!("holds SQL: \"{}\"", literal.trim()));
        }
    }
    found
}

/// The contents of the string literals in `source` (plain `"…"` with escapes, and raw
/// `r"…"`/`r#"…"#`); comments are skipped, since doc text may well say "select".
fn string_literals(source: &str) -> Vec<String> {
    let bytes = source.as_bytes();
    let mut literals = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'\'' => {
                // A char literal such as '"' must not open a string; a lifetime has no
                // closing quote within three bytes.
                if bytes.get(i + 2) == Some(&b'\'') {
                    i += 3;
                } else if bytes.get(i + 1) == Some(&b'\\') && bytes.get(i + 3) == Some(&b'\'') {
                    i += 4;
                } else {
                    i += 1;
                }
            }
            b'r' if matches!(bytes.get(i + 1), Some(b'"') | Some(b'#'))
                && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric() && bytes[i - 1] != b'_') =>
            {
                let hashes = bytes[i + 1..].iter().take_while(|b| **b == b'#').count();
                let open = i + 1 + hashes;
                if bytes.get(open) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close = format!("\"{}", "#".repeat(hashes));
                let start = open + 1;
                let end = source[start..]
                    .find(&close)
                    .map_or(source.len(), |at| start + at);
                literals.push(source[start..end].to_owned());
                i = end + close.len();
            }
            b'"' => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && bytes[end] != b'"' {
                    end += if bytes[end] == b'\\' { 2 } else { 1 };
                }
                literals.push(source[start..end.min(bytes.len())].to_owned());
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    literals
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read the adapter's directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn no_file_of_the_http_adapter_or_the_console_holds_sql() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files: Vec<PathBuf> = ["src/http", "src/console"]
        .iter()
        .flat_map(|dir| rust_files(&root.join(dir)))
        .collect();
    assert!(
        files.len() > 20,
        "src/http and src/console have their modules: {files:?}"
    );
    let offences: Vec<String> = files
        .iter()
        .flat_map(|file| {
            let source = std::fs::read_to_string(file).expect("read");
            sql_in(&source)
                .into_iter()
                .map(move |what| format!("{}: {what}", file.display()))
        })
        .collect();
    assert!(
        offences.is_empty(),
        "SQL belongs to the read models' query functions (or the application layer's own \
         tables), not to the HTTP adapter or the console:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_scan_finds_sql_in_calls_and_in_string_literals() {
    let handler = r##"
        // select the rows from the table (a comment may say so)
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "select {COLUMNS} from orders where store_id = $1 \
             order by placed_at desc limit $2"
        ))
        .fetch_all(&pool)
        .await?;
    "##;
    let found = sql_in(handler);
    assert!(found.iter().any(|f| f.contains("sqlx::query")), "{found:?}");
    assert!(found.iter().any(|f| f.contains("holds SQL")), "{found:?}");
    for statement in [
        r#"const Q: &str = "insert into idempotency_keys (id) values ($1)";"#,
        r#"let q = "delete from idempotency_keys where id = $1";"#,
        r#"let q = "update idempotency_keys set state = 'completed'";"#,
        r#"let q = r"SELECT email FROM credentials";"#,
    ] {
        assert!(!sql_in(statement).is_empty(), "{statement}");
    }
    // What an adapter does say: problem texts, doc comments, chars that are quotes.
    for clean in [
        r#"ApiError::not_found("order-not-found", "no such order")"#,
        "/// Select a store from the list, then update its settings.",
        r#"let quote = '"'; let text = "choose one of account_id or email";"#,
    ] {
        assert!(sql_in(clean).is_empty(), "{clean}: {:?}", sql_in(clean));
    }
}
