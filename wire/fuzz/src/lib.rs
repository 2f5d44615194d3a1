//! What the fuzz targets share: the bounds they decode under.

use locus_wire::decode::BatchBounds;

/// Ingest's defaults (LOCUS_MAX_FIXES_PER_BATCH, LOCUS_MAX_JSON_DEPTH,
/// LOCUS_MAX_STRING_BYTES), so the targets fuzz what production runs.
pub const BOUNDS: BatchBounds = BatchBounds {
    max_fixes: 1000,
    max_depth: 32,
    max_string_bytes: 1024,
};
