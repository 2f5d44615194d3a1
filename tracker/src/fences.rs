//! Geofence transitions: which fixes enter or leave which fences, once per transition per
//! device.
