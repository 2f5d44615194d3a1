//! The tracker role: reads the locations topic and keeps each session's track and
//! statistics, each device's last position and geofence state in PostgreSQL, and publishes
//! geofence events and positions through an outbox.

pub mod fences;
