//! The console's static files, vendored into the binary (no CDN, no front-end toolchain):
//! htmx (0BSD, `htmx.LICENSE`), the console's own script and style sheet. Each is addressed
//! with a hash of its content, so it is cached for a year and a new build is fetched at once.

use std::sync::LazyLock;

use poem::http::{header, StatusCode};
use poem::web::Path;
use poem::{handler, Response};
use sha2::{Digest, Sha256};

/// (name, media type, content)
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/htmx.min.js"),
    ),
    (
        "htmx.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("assets/htmx.LICENSE"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    ),
];

/// Each file's content hash (hex, 12 digits), computed once.
static VERSIONS: LazyLock<Vec<String>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(_, _, content)| hex::encode(&Sha256::digest(content)[..6]))
        .collect()
});

/// The address of asset `name`, with its version.
pub fn url(name: &str) -> String {
    match FILES.iter().position(|(file, _, _)| *file == name) {
        Some(i) => format!("/console/assets/{name}?v={}", VERSIONS[i]),
        None => format!("/console/assets/{name}"),
    }
}

/// `GET /console/assets/{name}`.
#[handler]
pub fn asset(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, media_type, content)) => Response::builder()
            .content_type(*media_type)
            .header(header::CACHE_CONTROL, "public, max-age=31536000, immutable")
            .body(*content),
        None => Response::builder().status(StatusCode::NOT_FOUND).finish(),
    }
}
