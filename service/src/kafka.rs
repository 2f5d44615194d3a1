//! The Kafka client's side of the wire crate's header pairs: the one conversion from
//! `locus_wire::headers` pairs to rdkafka headers, for every process that produces records.

use rdkafka::message::{Header, OwnedHeaders};

/// Kafka headers from `(name, value)` pairs such as `locus_wire::headers::record_headers`,
/// in the same order.
pub fn headers<V: AsRef<str>>(pairs: &[(&str, V)]) -> OwnedHeaders {
    pairs.iter().fold(
        OwnedHeaders::new_with_capacity(pairs.len()),
        |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value.as_ref()),
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;

    #[test]
    fn pairs_become_headers_in_order() {
        let h = headers(&[("a", "1"), ("b", "2")]);
        let got: Vec<(&str, &[u8])> = h.iter().map(|h| (h.key, h.value.unwrap())).collect();
        assert_eq!(got, [("a", &b"1"[..]), ("b", &b"2"[..])]);
    }
}
