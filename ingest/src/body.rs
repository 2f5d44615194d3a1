//! Reading request bodies: content type, optional gzip, and a size bound that holds after
//! decompression (a small gzip body must not inflate into gigabytes in memory).

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};

use crate::error::ApiError;

fn too_large(limit: usize) -> ApiError {
    ApiError::TooLarge {
        code: "body_too_large",
        message: format!(
            "the body is larger than {limit} bytes (after decompression); send fewer fixes per batch"
        ),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// The body as JSON bytes, at most `limit` bytes once decompressed. An empty body is
/// returned as empty when `optional`, whatever its content type.
pub async fn json_bytes(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    optional: bool,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let raw = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(limit))?;
    if raw.is_empty() && optional {
        return Ok(raw);
    }
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType(
            "the body must be JSON: send `Content-Type: application/json`".into(),
        ));
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("identity") => Ok(raw),
        Some("gzip") => {
            let mut out = Vec::with_capacity(raw.len() * 4);
            // Read one byte past the limit to tell "exactly at the limit" from "over it".
            flate2::read::GzDecoder::new(&raw[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| ApiError::BadRequest {
                    code: "malformed_gzip",
                    message: format!("the body is not valid gzip ({e})"),
                })?;
            if out.len() > limit {
                return Err(too_large(limit));
            }
            Ok(out.into())
        }
        Some(other) => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding `{other}` is not supported; send gzip or no encoding"
        ))),
    }
}

/// Parses JSON, mapping syntax errors to `malformed_json` and shape errors to `invalid_body`.
///
/// The body is checked as UTF-8 once, up front, and parsed as a `str`: parsing bytes would
/// check every string again (a fifth of decode time in the batch profile).
pub fn parse<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ApiError::BadRequest {
        code: "malformed_json",
        message: format!("the body is not UTF-8 text: {e}"),
    })?;
    serde_json::from_str(text).map_err(|e| {
        let code = if e.is_data() {
            "invalid_body"
        } else {
            "malformed_json"
        };
        ApiError::BadRequest {
            code,
            message: format!("the body is not what this endpoint takes: {e}"),
        }
    })
}
