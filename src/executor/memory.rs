//! In-memory actuators for tests and the embedded demo: they record every call in order.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::actuator::{
    ActuatorError, Knob, KnobActuator, PlacementActuator, ReplicaView, WindowStats,
};
use crate::planner::{ReplicaState, Settings};

fn poisoned() -> ActuatorError {
    ActuatorError {
        reason: "in-memory actuator lock poisoned".into(),
        retriable: false,
    }
}

struct PlacementState {
    resources: BTreeMap<String, ReplicaView>,
    /// Replicas still syncing: (resource, node) → reads left before they report UpToDate.
    syncing: BTreeMap<(String, String), u32>,
    calls: Vec<String>,
}

/// A storage cluster in memory. New replicas become UpToDate after `sync_reads` reads of `replicas`.
pub struct MemoryPlacement {
    state: Mutex<PlacementState>,
    sync_reads: u32,
}

impl MemoryPlacement {
    /// A cluster with the given resources; new replicas sync after `sync_reads` reads.
    pub fn new(resources: BTreeMap<String, ReplicaView>, sync_reads: u32) -> Self {
        MemoryPlacement {
            state: Mutex::new(PlacementState {
                resources,
                syncing: BTreeMap::new(),
                calls: Vec::new(),
            }),
            sync_reads,
        }
    }

    /// Every call so far, in order, as `verb resource [node [pool]]`.
    pub fn calls(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.calls.clone())
            .unwrap_or_default()
    }

    /// The replicas of `resource` now, without counting as a read.
    pub fn snapshot(&self, resource: &str) -> Option<ReplicaView> {
        self.state.lock().ok()?.resources.get(resource).cloned()
    }
}

#[async_trait]
impl PlacementActuator for MemoryPlacement {
    async fn add_replica(
        &self,
        resource: &str,
        node: &str,
        pool: &str,
    ) -> Result<(), ActuatorError> {
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        s.calls
            .push(format!("add_replica {resource} {node} {pool}"));
        let view = s.resources.entry(resource.to_string()).or_default();
        if !view.replicas.iter().any(|r| r.node == node) {
            view.replicas.push(ReplicaState {
                node: node.into(),
                pool: pool.into(),
                diskful: true,
                up_to_date: self.sync_reads == 0,
                in_use: false,
            });
            s.syncing
                .insert((resource.into(), node.into()), self.sync_reads);
        }
        Ok(())
    }

    async fn remove_replica(&self, resource: &str, node: &str) -> Result<(), ActuatorError> {
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        s.calls.push(format!("remove_replica {resource} {node}"));
        if let Some(view) = s.resources.get_mut(resource) {
            view.replicas.retain(|r| r.node != node);
        }
        Ok(())
    }

    async fn set_place_count(&self, resource: &str, place_count: u32) -> Result<(), ActuatorError> {
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        s.calls
            .push(format!("set_place_count {resource} {place_count}"));
        s.resources
            .entry(resource.to_string())
            .or_default()
            .place_count = place_count;
        Ok(())
    }

    async fn replicas(&self, resource: &str) -> Result<ReplicaView, ActuatorError> {
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        s.calls.push(format!("replicas {resource}"));
        let mut done = Vec::new();
        for ((res, node), left) in s.syncing.iter_mut() {
            if res == resource {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    done.push(node.clone());
                }
            }
        }
        for node in done {
            s.syncing.remove(&(resource.to_string(), node.clone()));
            if let Some(r) = s
                .resources
                .get_mut(resource)
                .and_then(|v| v.replicas.iter_mut().find(|r| r.node == node))
            {
                r.up_to_date = true;
            }
        }
        s.resources
            .get(resource)
            .cloned()
            .ok_or_else(|| ActuatorError {
                reason: format!("resource {resource} not found"),
                retriable: false,
            })
    }
}

struct KnobState {
    settings: Settings,
    observations: VecDeque<WindowStats>,
    fallback: WindowStats,
    calls: Vec<String>,
}

/// Live knobs in memory; `observe` returns scripted windows in order, then repeats the last one.
pub struct MemoryKnobs {
    state: Mutex<KnobState>,
}

impl MemoryKnobs {
    /// Knobs at `settings`, with `observations` to hand out from `observe`.
    pub fn new(settings: Settings, observations: Vec<WindowStats>) -> Self {
        let fallback = observations.last().copied().unwrap_or_default();
        MemoryKnobs {
            state: Mutex::new(KnobState {
                settings,
                observations: observations.into(),
                fallback,
                calls: Vec::new(),
            }),
        }
    }

    /// Every `set` so far, as `knob=value`, in order.
    pub fn calls(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.calls.clone())
            .unwrap_or_default()
    }

    /// The knob values now.
    pub fn settings(&self) -> Settings {
        self.state.lock().map(|s| s.settings).unwrap_or_default()
    }
}

#[async_trait]
impl KnobActuator for MemoryKnobs {
    async fn current(&self) -> Result<Settings, ActuatorError> {
        Ok(self.state.lock().map_err(|_| poisoned())?.settings)
    }

    async fn set(&self, knob: Knob, value: u64) -> Result<(), ActuatorError> {
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        let bad = || ActuatorError {
            reason: format!("{knob:?} value {value} out of range"),
            retriable: false,
        };
        match knob {
            Knob::BatchRows => s.settings.batch_rows = u32::try_from(value).map_err(|_| bad())?,
            Knob::BatchBytes => s.settings.batch_bytes = value,
            Knob::Concurrency => {
                s.settings.concurrency = u32::try_from(value).map_err(|_| bad())?
            }
            Knob::Prefetch => s.settings.prefetch = u32::try_from(value).map_err(|_| bad())?,
        }
        let name = serde_json::to_value(knob)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        s.calls.push(format!("{name}={value}"));
        Ok(())
    }

    async fn observe(&self, window: Duration) -> Result<WindowStats, ActuatorError> {
        tokio::time::sleep(window).await;
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        let fallback = s.fallback;
        Ok(s.observations.pop_front().unwrap_or(fallback))
    }
}
