//! Kafka topic names: the one place a topic is named. Every process that reads or writes a
//! topic builds its names from the deployment's prefix (`LOCUS_KAFKA_TOPIC_PREFIX`) here.

/// The topics of one deployment, all under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    locations: String,
    session_events: String,
    dead_letter: String,
    tenant_events: String,
    geofence_events: String,
    positions: String,
}

impl Topics {
    /// The topics under `prefix` (`locus.` gives `locus.locations`, ...).
    pub fn new(prefix: &str) -> Self {
        Self {
            locations: format!("{prefix}locations"),
            session_events: format!("{prefix}session-events"),
            dead_letter: format!("{prefix}dead-letter"),
            tenant_events: format!("{prefix}tenant-events"),
            geofence_events: format!("{prefix}geofence-events"),
            positions: format!("{prefix}positions"),
        }
    }

    /// One record per accepted fix, keyed by session id.
    pub fn locations(&self) -> &str {
        &self.locations
    }

    /// Session started and stopped events, keyed by session id.
    pub fn session_events(&self) -> &str {
        &self.session_events
    }

    /// Records that could not be forwarded or delivered, with headers saying why.
    pub fn dead_letter(&self) -> &str {
        &self.dead_letter
    }

    /// Changes made through the admin API (the audit log), keyed by tenant id, or
    /// `platform` for changes that belong to no tenant (partners).
    pub fn tenant_events(&self) -> &str {
        &self.tenant_events
    }

    /// Geofence enter and exit events, keyed by device id (the tracker's relay writes
    /// them; cleanup by retention).
    pub fn geofence_events(&self) -> &str {
        &self.geofence_events
    }

    /// The last known position of each device, keyed by `<tenant>/<device>` and compacted: the
    /// latest record of a key is its device's position.
    pub fn positions(&self) -> &str {
        &self.positions
    }

    /// The topics of the location pipeline, in the order above (not the tenant-events
    /// topic, which is not part of it).
    pub fn all(&self) -> [&str; 3] {
        [self.locations(), self.session_events(), self.dead_letter()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_name_is_the_prefix_and_a_fixed_suffix() {
        let t = Topics::new("t1.");
        assert_eq!(
            t.all(),
            ["t1.locations", "t1.session-events", "t1.dead-letter"]
        );
        assert_eq!(t.locations(), "t1.locations");
        assert_eq!(t.session_events(), "t1.session-events");
        assert_eq!(t.dead_letter(), "t1.dead-letter");
        assert_eq!(t.tenant_events(), "t1.tenant-events");
        assert_eq!(t.geofence_events(), "t1.geofence-events");
        assert_eq!(t.positions(), "t1.positions");
    }
}
