//! Geo math of Locus (the `geo` crate underneath): distances, implausible jumps, session
//! statistics, track simplification and geofence lookups. Pure functions, no I/O.
