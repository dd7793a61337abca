//! All three stand-ins started together, with a configuration that points trimtab's real clients at them.

use std::net::SocketAddr;

use crate::cassandra::CassandraConfig;
use crate::config::{AgentConfig, ApiConfig, Config};
use crate::linstor::config::LinstorConfig;
use crate::pipeline::PipelineConfig;
use crate::servicebus::azure::ServiceBusConfig;
use crate::servicebus::renewal::RenewalConfig;
use crate::servicebus::sas::SecretString;
use crate::servicebus::Entity;

use super::cql::{CqlServer, CqlServerConfig, CqlServerError};
use super::linstor::{FakeLinstor, FakeLinstorConfig, FakeLinstorError};
use super::servicebus::{StandIn, StandInConfig, StandInError};

/// The bearer token the fake controller demands; reader and executor present it (LINSTOR tokens have no scopes).
pub const SIM_LINSTOR_TOKEN: &str = "trimtab-sim-token";

/// How to start the stand-ins.
#[derive(Debug, Clone, Default)]
pub struct SimOptions {
    /// The Service Bus namespace: queues, topics, lock duration.
    pub servicebus: StandInConfig,
    /// The CQL server: address and optional persistence file.
    pub cql: CqlServerConfig,
    /// The fake LINSTOR controller: address and cluster fixture.
    pub linstor: FakeLinstorConfig,
    /// Bind Service Bus to 127.0.0.1:5672 exactly instead of the first free loopback address.
    pub fixed_servicebus_address: bool,
}

impl SimOptions {
    /// Stand-ins on loopback with free ports, the given queues, and the shipped LINSTOR fixture.
    pub fn local(queues: &[&str]) -> Self {
        let mut options = SimOptions::default();
        options.servicebus.queues = queues.iter().map(|q| q.to_string()).collect();
        options.cql.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        options.linstor.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        options.linstor.token = Some(SIM_LINSTOR_TOKEN.into());
        options
    }
}

/// A stand-in failed to start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The Service Bus stand-in.
    #[error("service bus stand-in: {0}")]
    ServiceBus(#[from] StandInError),
    /// The CQL server.
    #[error("cql server: {0}")]
    Cql(#[from] CqlServerError),
    /// The fake LINSTOR controller.
    #[error("fake linstor controller: {0}")]
    Linstor(#[from] FakeLinstorError),
}

/// The three stand-ins, running.
pub struct SimCluster {
    /// Service Bus over AMQP 1.0, plus its management endpoint.
    pub servicebus: StandIn,
    /// The CQL v4 server.
    pub cql: CqlServer,
    /// The fake LINSTOR controller.
    pub linstor: FakeLinstor,
}

impl SimCluster {
    /// Starts the three stand-ins.
    pub async fn start(options: SimOptions) -> Result<SimCluster, SimError> {
        let servicebus = if options.fixed_servicebus_address {
            StandIn::start(options.servicebus).await?
        } else {
            StandIn::start_on_free_loopback(options.servicebus).await?
        };
        let cql = CqlServer::start(options.cql).await?;
        let linstor = FakeLinstor::start(options.linstor).await?;
        Ok(SimCluster {
            servicebus,
            cql,
            linstor,
        })
    }

    /// A configuration whose sections point at the stand-ins, receiving from `entities`.
    pub fn config(&self, entities: Vec<Entity>) -> Config {
        let mut servicebus = ServiceBusConfig::from_connection_string(SecretString::new(
            self.servicebus.connection_string(),
        ));
        servicebus.tls = false;
        servicebus.management_base_url = Some(self.servicebus.management_base_url());
        let cassandra = CassandraConfig {
            contact_points: vec![self.cql.addr().to_string()],
            ..CassandraConfig::default()
        };
        let linstor = LinstorConfig::for_controller(
            &self.linstor.base_url(),
            Some(SIM_LINSTOR_TOKEN),
            Some(SIM_LINSTOR_TOKEN),
        );
        Config {
            servicebus,
            lock_renewal: RenewalConfig::default(),
            cassandra,
            linstor,
            pipeline: PipelineConfig::for_entities(entities),
            // The stand-ins' configuration is for tests and the demo, run from anywhere: no windows file in the
            // working directory may hold their ingest, and nothing is written there.
            agent: AgentConfig {
                maintenance_windows: false,
                ..AgentConfig::default()
            },
            chatops: None,
            api: ApiConfig::default(),
        }
    }

    /// What another client needs to reach each stand-in, one line each.
    pub fn addresses(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "service bus (azservicebus, unsecured)",
                self.servicebus.connection_string(),
            ),
            (
                "service bus (python, other SDKs)",
                self.servicebus.python_connection_string(),
            ),
            ("management endpoint", self.servicebus.management_base_url()),
            ("cql (host:port)", self.cql.addr().to_string()),
            ("linstor controller", self.linstor.base_url()),
            ("linstor bearer token", SIM_LINSTOR_TOKEN.to_string()),
        ]
    }

    /// Stops the three stand-ins.
    pub async fn shutdown(self) {
        self.servicebus.shutdown().await;
        if let Err(error) = self.cql.shutdown().await {
            tracing::warn!(%error, "cql server did not shut down cleanly");
        }
        self.linstor.shutdown().await;
    }
}
