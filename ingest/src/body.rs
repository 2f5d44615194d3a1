//! Reading request bodies: content type, optional gzip, and a size bound that holds after
//! decompression (a small gzip body must not inflate into gigabytes in memory).

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};

use locus_wire::api::LocationBatch;
use locus_wire::decode::{BatchBounds, BatchError};

use crate::config::RequestLimits;
use crate::error::{ApiError, ErrorCode};

fn too_large(limit: usize) -> ApiError {
    ApiError::invalid(
        ErrorCode::BodyTooLarge,
        format!(
            "the body is larger than {limit} bytes (after decompression); send fewer fixes per batch"
        ),
    )
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
    // The headers say whether the body can be taken at all: refuse before reading it.
    // An optional body may still be empty whatever they say, so it is read first.
    let encoding = encoding(headers);
    if !optional && let Err(e) = encoding {
        return Err(e);
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let raw = read_bounded(body, limit, declared).await?;
    if raw.is_empty() && optional {
        return Ok(raw);
    }
    if !encoding? {
        return Ok(raw);
    }
    // Reserved whole up front: untouched pages cost no memory, and the buffer is never
    // grown by copying (each doubling held the old and the new copy at once).
    let mut out = Vec::with_capacity(limit + 1);
    // Read one byte past the limit to tell "exactly at the limit" from "over it".
    flate2::read::GzDecoder::new(&raw[..])
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::Invalid {
            code: ErrorCode::MalformedGzip,
            message: format!("the body is not valid gzip ({e})"),
        })?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(out.into())
}

/// From the headers alone: whether the body is JSON in gzip (`true`) or unencoded
/// (`false`), or the 415 that refuses it.
fn encoding(headers: &HeaderMap) -> Result<bool, ApiError> {
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
        None | Some("identity") => Ok(false),
        Some("gzip") => Ok(true),
        Some(other) => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding `{}` is not supported; send gzip or no encoding",
            locus_wire::decode::echo(other)
        ))),
    }
}

/// Decodes a posted batch, stopping one fix past `limits.max_fixes_per_batch`.
pub fn batch(bytes: &[u8], limits: &RequestLimits) -> Result<LocationBatch, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ApiError::Invalid {
        code: ErrorCode::MalformedJson,
        message: format!("the body is not UTF-8 text: {e}"),
    })?;
    let bounds = BatchBounds {
        max_fixes: limits.max_fixes_per_batch,
        max_depth: limits.max_json_depth,
        max_string_bytes: limits.max_string_bytes,
    };
    LocationBatch::decode_bounded(text, &bounds).map_err(|e| match e {
        BatchError::TooDeep { max } => ApiError::invalid(
            ErrorCode::JsonTooDeep,
            format!("the JSON nests deeper than {max} levels (LOCUS_MAX_JSON_DEPTH is {max}): send fixes as flat objects"),
        ),
        BatchError::StringTooLong { max } => ApiError::invalid(
            ErrorCode::StringTooLong,
            format!("a string of the body is longer than {max} bytes (LOCUS_MAX_STRING_BYTES is {max}): shorten it or leave the field out"),
        ),
        BatchError::TooManyFixes { max } => ApiError::invalid(
            ErrorCode::TooManyFixes,
            format!(
                "the batch has more than {max} fixes (LOCUS_MAX_FIXES_PER_BATCH is {max}): split it"
            ),
        ),
        BatchError::Json(e) => json_error(&e),
    })
}

/// `malformed_json` for syntax, `invalid_body` for shape; the message is cut short, as
/// serde repeats bad strings whole.
fn json_error(e: &serde_json::Error) -> ApiError {
    let code = if e.is_data() {
        ErrorCode::InvalidBody
    } else {
        ErrorCode::MalformedJson
    };
    let mut why = e.to_string();
    if why.len() > 200 {
        let cut = (0..=200)
            .rev()
            .find(|&i| why.is_char_boundary(i))
            .unwrap_or(0);
        why.truncate(cut);
        why.push('…');
    }
    ApiError::Invalid {
        code,
        message: format!("the body is not what this endpoint takes: {why}"),
    }
}

/// Reads at most `limit` bytes. An oversized body is still read (and dropped) up to a
/// few times the limit before the 413 goes out: answering while the client is still
/// sending makes the server close the connection under it, and many clients then report a
/// broken connection instead of the 413 and its reason.
async fn read_bounded(
    body: Body,
    limit: usize,
    declared: Option<usize>,
) -> Result<Bytes, ApiError> {
    use futures::StreamExt;

    let drain_cap = limit.saturating_mul(4).min(16 * 1024 * 1024);
    if declared.is_some_and(|n| n > drain_cap) {
        return Err(too_large(limit));
    }
    let mut stream = body.into_data_stream();
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::Invalid {
            code: ErrorCode::BodyUnreadable,
            message: format!("the body could not be read ({e}); send it again"),
        })?;
        seen += chunk.len();
        if seen > drain_cap {
            break;
        }
        if seen <= limit {
            buf.extend_from_slice(&chunk);
        }
    }
    if seen > limit {
        return Err(too_large(limit));
    }
    Ok(buf.into())
}

/// Parses JSON, mapping syntax errors to `malformed_json` and shape errors to `invalid_body`.
///
/// The body is checked as UTF-8 once, up front, and parsed as a `str`: parsing bytes would
/// check every string again (a fifth of decode time in the batch profile).
pub fn parse<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ApiError::Invalid {
        code: ErrorCode::MalformedJson,
        message: format!("the body is not UTF-8 text: {e}"),
    })?;
    serde_json::from_str(text).map_err(|e| json_error(&e))
}

/// The body of any content type (the tracking apps send JSON or a form, not always with a
/// matching header), gunzipped when `Content-Encoding: gzip`, at most `limit` bytes once
/// decompressed: the client routes' reader, where [`json_bytes`] would refuse with 415.
pub async fn any_bytes(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let gzip = match encoding.as_deref() {
        None | Some("identity") | Some("") => false,
        Some("gzip") => true,
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Encoding `{}` is not supported; send gzip or no encoding",
                locus_wire::decode::echo(other)
            )));
        }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let raw = read_bounded(body, limit, declared).await?;
    if !gzip || raw.is_empty() {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(limit.min(raw.len().saturating_mul(8)) + 1);
    flate2::read::GzDecoder::new(&raw[..])
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::Invalid {
            code: ErrorCode::MalformedGzip,
            message: format!("the body is not valid gzip ({e})"),
        })?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(out.into())
}
