//! A test's own three-node Apache Kafka cluster, for faults that need replication: every
//! node is broker and controller (a three-voter KRaft quorum), topics are replicated three
//! times with `min.insync.replicas=2`, as production runs them.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::broker::{KafkaNode, Settings, Stop, free_port};

/// Three KRaft nodes on free loopback ports, killed and deleted on drop.
#[derive(Debug)]
pub struct KafkaCluster {
    /// Node `i` has `node.id` `i + 1`.
    nodes: Vec<KafkaNode>,
}

/// What every node of the cluster overrides in the local stack's settings: internal topics
/// replicated like production's.
const REPLICATED: &str = "\
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
";

impl KafkaCluster {
    /// Formats and starts three nodes; returns once each answers a metadata request.
    pub fn start() -> Self {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, (_, controller))| format!("{}@127.0.0.1:{controller}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let cluster_id = KafkaNode::random_cluster_id();
        let mut nodes: Vec<KafkaNode> = ports
            .iter()
            .enumerate()
            .map(|(i, &(port, controller_port))| {
                KafkaNode::format(Settings {
                    node_id: i as u32 + 1,
                    port,
                    controller_port,
                    voters: voters.clone(),
                    cluster_id: Some(&cluster_id),
                    overrides: REPLICATED,
                    secured: false,
                })
            })
            .collect();
        // All three first: no node is ready before the quorum has a majority.
        for node in &mut nodes {
            node.spawn();
        }
        for node in &mut nodes {
            node.wait_ready();
        }
        Self { nodes }
    }

    /// Bootstrap servers naming every node.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(KafkaNode::bootstrap)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `node.id` of the leader of `topic`'s `partition`, as the cluster reports it.
    pub fn leader_of(&self, topic: &str, partition: i32) -> Option<i32> {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("create a Kafka client");
        let metadata = client
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .ok()?;
        let t = metadata.topics().iter().find(|t| t.name() == topic)?;
        let p = t.partitions().iter().find(|p| p.id() == partition)?;
        (p.leader() >= 0).then_some(p.leader())
    }

    /// Stops node `node_id` with `how` (its log directory stays).
    pub fn stop(&mut self, node_id: i32, how: Stop) {
        self.node(node_id).stop(how);
    }

    /// Starts node `node_id` again.
    pub fn restart(&mut self, node_id: i32) {
        self.node(node_id).restart();
    }

    fn node(&mut self, node_id: i32) -> &mut KafkaNode {
        let i = usize::try_from(node_id - 1).expect("node ids start at 1");
        &mut self.nodes[i]
    }
}
