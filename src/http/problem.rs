//! RFC 9457 problem details: the one error body every endpoint returns
//! (`application/problem+json`, with a stable `type` URI per kind of problem).

use poem_openapi::Object;

/// Base of every problem `type` URI; the path names the problem, and never changes meaning.
pub const PROBLEM_TYPE_BASE: &str = "https://shopfront.dev/problems/";

/// An RFC 9457 problem document.
#[derive(Clone, Debug, PartialEq, Eq, Object, serde::Serialize)]
#[oai(rename = "Problem")]
pub struct Problem {
    /// A URI naming the kind of problem (stable; documented in docs/).
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, for a person to read.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For invalid input: the field, parameter or header at fault (an extension member).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    pub fn new(slug: &str, title: &str, status: u16, detail: impl Into<Option<String>>) -> Self {
        Self {
            problem_type: format!("{PROBLEM_TYPE_BASE}{slug}"),
            title: title.to_owned(),
            status,
            detail: detail.into(),
            field: None,
        }
    }

    /// This problem as a response of its own status, `application/problem+json`.
    pub fn to_response(&self) -> poem::Response {
        poem::Response::builder()
            .status(
                poem::http::StatusCode::from_u16(self.status)
                    .unwrap_or(poem::http::StatusCode::INTERNAL_SERVER_ERROR),
            )
            .content_type("application/problem+json")
            .body(serde_json::to_vec(self).unwrap_or_default())
    }

    /// The same problem, naming the input `field` at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}
