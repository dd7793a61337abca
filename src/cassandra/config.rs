//! The Cassandra writer's configuration: typed, documented, validated without IO.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::CassandraError;

/// How trimtab reaches Cassandra and how it batches its writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CassandraConfig {
    /// `host:port` of one or more nodes; the driver discovers the rest of the cluster from them.
    #[serde(default = "default_contact_points")]
    pub contact_points: Vec<String>,
    /// Keyspace holding `events` and trimtab's own tables; created if absent.
    #[serde(default = "default_keyspace")]
    pub keyspace: String,
    /// Replication of the keyspace when trimtab creates it (an existing keyspace is left alone).
    #[serde(default)]
    pub replication: Replication,
    /// Consistency level of every write and read.
    #[serde(default)]
    pub consistency: Consistency,
    /// Client-side timeout of one request, in milliseconds.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Most rows in one (single-partition, unlogged) batch. Live: the tuner changes it at run time.
    /// When the pipeline runs, `[pipeline.knobs]` sets this (live) and this value is only the writer's start.
    #[serde(default = "default_rows_per_batch")]
    pub rows_per_batch: usize,
    /// Most batches in flight at once. Live: the tuner changes it at run time.
    /// When the pipeline runs, `[pipeline.knobs]` sets this (live) and this value is only the writer's start.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Most bytes of row data in one batch. Cassandra exempts single-partition batches from its 5 KiB
    /// warn / 50 KiB fail thresholds, so this cap exists to bound request size and latency, not to
    /// dodge those checks. Live.
    /// When the pipeline runs, `[pipeline.knobs]` sets this (live) and this value is only the writer's start.
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// A row larger than this is refused before sending, with an error naming its message id.
    #[serde(default = "default_max_row_bytes")]
    pub max_row_bytes: usize,
    /// How many times one batch is tried before its rows are reported as failed (retriable errors only).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry, in milliseconds; doubled on each further attempt, with jitter.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Longest wait between two attempts, in milliseconds.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// How many recent batch observations the writer keeps for its snapshot.
    #[serde(default = "default_observation_window")]
    pub observation_window: usize,
}

/// Keyspace replication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "class", deny_unknown_fields)]
pub enum Replication {
    /// One replication factor for the whole cluster; for single-datacenter and test clusters.
    SimpleStrategy {
        /// Number of replicas.
        replication_factor: u32,
    },
    /// A replication factor per datacenter.
    NetworkTopologyStrategy {
        /// Datacenter name to number of replicas.
        datacenters: BTreeMap<String, u32>,
    },
}

impl Default for Replication {
    fn default() -> Self {
        Replication::SimpleStrategy {
            replication_factor: 1,
        }
    }
}

impl Replication {
    /// The CQL map literal, such as `{'class': 'SimpleStrategy', 'replication_factor': 1}`.
    pub fn cql(&self) -> String {
        match self {
            Replication::SimpleStrategy { replication_factor } => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}")
            }
            Replication::NetworkTopologyStrategy { datacenters } => {
                let mut s = "{'class': 'NetworkTopologyStrategy'".to_string();
                for (dc, n) in datacenters {
                    s.push_str(&format!(", '{}': {n}", dc.replace('\'', "''")));
                }
                s.push('}');
                s
            }
        }
    }
}

/// Consistency levels trimtab may write at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// One replica.
    One,
    /// One replica in the local datacenter.
    LocalOne,
    /// A majority of all replicas.
    Quorum,
    /// A majority of the local datacenter's replicas (the default).
    #[default]
    LocalQuorum,
    /// Every replica.
    All,
}

impl Consistency {
    pub(crate) fn driver(self) -> scylla::statement::Consistency {
        use scylla::statement::Consistency as C;
        match self {
            Consistency::One => C::One,
            Consistency::LocalOne => C::LocalOne,
            Consistency::Quorum => C::Quorum,
            Consistency::LocalQuorum => C::LocalQuorum,
            Consistency::All => C::All,
        }
    }
}

fn default_contact_points() -> Vec<String> {
    vec!["127.0.0.1:9042".to_string()]
}

fn default_keyspace() -> String {
    "trimtab".to_string()
}

const fn default_request_timeout_ms() -> u64 {
    5_000
}

const fn default_rows_per_batch() -> usize {
    32
}

const fn default_max_in_flight() -> usize {
    64
}

const fn default_max_batch_bytes() -> usize {
    64 * 1024
}

const fn default_max_row_bytes() -> usize {
    1024 * 1024
}

const fn default_max_attempts() -> u32 {
    3
}

const fn default_initial_backoff_ms() -> u64 {
    50
}

const fn default_max_backoff_ms() -> u64 {
    2_000
}

const fn default_observation_window() -> usize {
    4_096
}

impl Default for CassandraConfig {
    fn default() -> Self {
        CassandraConfig {
            contact_points: default_contact_points(),
            keyspace: default_keyspace(),
            replication: Replication::default(),
            consistency: Consistency::default(),
            request_timeout_ms: default_request_timeout_ms(),
            rows_per_batch: default_rows_per_batch(),
            max_in_flight: default_max_in_flight(),
            max_batch_bytes: default_max_batch_bytes(),
            max_row_bytes: default_max_row_bytes(),
            max_attempts: default_max_attempts(),
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            observation_window: default_observation_window(),
        }
    }
}

impl CassandraConfig {
    /// Checks the configuration without contacting anything; the error names the field.
    pub fn validate(&self) -> Result<(), CassandraError> {
        let bad = |m: String| Err(CassandraError::Config(m));
        if self.contact_points.is_empty() {
            return bad("contact_points is empty: expected at least one host:port".into());
        }
        let ks = &self.keyspace;
        if ks.is_empty()
            || ks.len() > 48
            || !ks.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return bad(format!(
                "keyspace {ks:?} is not a valid name: expected 1 to 48 letters, digits or '_'"
            ));
        }
        if self.rows_per_batch == 0 || self.max_in_flight == 0 {
            return bad("rows_per_batch and max_in_flight must be at least 1".into());
        }
        if self.max_batch_bytes == 0 || self.max_row_bytes == 0 {
            return bad("max_batch_bytes and max_row_bytes must be at least 1".into());
        }
        if self.max_attempts == 0 {
            return bad("max_attempts must be at least 1".into());
        }
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms must be at least 1".into());
        }
        if let Replication::NetworkTopologyStrategy { datacenters } = &self.replication {
            if datacenters.is_empty() {
                return bad(
                    "replication.datacenters is empty: expected at least one datacenter".into(),
                );
            }
        }
        Ok(())
    }

    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_parse_from_toml() {
        CassandraConfig::default()
            .validate()
            .expect("defaults are valid");
        let c: CassandraConfig = toml::from_str(
            "keyspace = \"ks\"\nrows_per_batch = 8\n[replication]\nclass = \"NetworkTopologyStrategy\"\ndatacenters = { dc1 = 3 }\n",
        )
        .expect("parse");
        assert_eq!(c.rows_per_batch, 8);
        assert_eq!(
            c.replication.cql(),
            "{'class': 'NetworkTopologyStrategy', 'dc1': 3}"
        );
        assert!(
            toml::from_str::<CassandraConfig>("keyspaec = \"x\"").is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let c = CassandraConfig {
            keyspace: "bad-name".into(),
            ..CassandraConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("keyspace"));
        let c = CassandraConfig {
            contact_points: vec![],
            ..CassandraConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("contact_points"));
    }
}
