//! The LINSTOR client and the volume executor against the fake controller over HTTP: every verb, every error class.

use std::future::Future;
use std::time::Duration;

use trimtab::linstor::ops::VolumeExecutor;
use trimtab::linstor::placement::PlacementSnapshot;
use trimtab::linstor::retcode;
use trimtab::linstor::types::{AutoPlaceRequest, AutoSelectFilter, ToggleDisk};
use trimtab::linstor::{LinstorConfig, LinstorError, LinstorReader, LinstorWriter, Outcome};
use trimtab::message::VolumeRequest;
use trimtab::sim::linstor::{FakeLinstor, FakeLinstorConfig};

const GIB: u64 = 1024 * 1024;

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 20 s; likely deadlocked"))
}

async fn fake_with(token: Option<&str>, sync_delay_ms: u64) -> FakeLinstor {
    within(
        "fake start",
        FakeLinstor::start(FakeLinstorConfig {
            token: token.map(str::to_owned),
            sync_delay_ms,
            ..FakeLinstorConfig::default()
        }),
    )
    .await
    .expect("fake linstor starts")
}

async fn fake() -> FakeLinstor {
    fake_with(None, 0).await
}

fn clients(fake: &FakeLinstor) -> (LinstorReader, LinstorWriter) {
    let config = LinstorConfig::for_controller(&fake.base_url(), None, None)
        .validate()
        .unwrap();
    (
        LinstorReader::new(&config).unwrap(),
        LinstorWriter::new(&config).unwrap(),
    )
}

fn place(count: u32, pool: &str, different: &[&str]) -> AutoPlaceRequest {
    AutoPlaceRequest {
        diskless_on_remaining: Some(false),
        select_filter: AutoSelectFilter {
            place_count: Some(count),
            storage_pool_list: Some(vec![pool.to_owned()]),
            replicas_on_different: Some(different.iter().map(|s| s.to_string()).collect()),
            ..AutoSelectFilter::default()
        },
        ..AutoPlaceRequest::default()
    }
}

async fn create_placed(writer: &LinstorWriter, name: &str, size: u64, count: u32) {
    within("rd", writer.create_resource_definition(name, None))
        .await
        .unwrap();
    within("vd", writer.create_volume_definition(name, 0, size))
        .await
        .unwrap();
    within(
        "autoplace",
        writer.autoplace(name, &place(count, "pool-ssd", &["Aux/zone"])),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn reads_version_nodes_pools_and_groups() {
    let fake = fake().await;
    let (reader, _) = clients(&fake);
    let version = within("version", reader.version()).await.unwrap();
    assert_eq!(version.rest_api_version, "1.28.0");
    let nodes = within("nodes", reader.nodes()).await.unwrap();
    assert_eq!(nodes.len(), 6);
    assert!(nodes
        .iter()
        .all(|n| n.is_online() && n.props.contains_key("Aux/zone")));
    let pools = within("pools", reader.storage_pools()).await.unwrap();
    let ssd_n5 = pools
        .iter()
        .find(|p| p.node_name == "n5" && p.storage_pool_name == "pool-ssd")
        .unwrap();
    assert_eq!(ssd_n5.total_capacity, Some(200 * GIB));
    assert_eq!(ssd_n5.free_capacity, Some(200 * GIB));
    assert!(pools.iter().any(|p| p.provider_kind == "DISKLESS"));
    let groups = within("groups", reader.resource_groups()).await.unwrap();
    assert!(groups
        .iter()
        .any(|g| g.name == "DfltRscGrp" && g.select_filter.place_count == Some(2)));
    let props = within("controller props", reader.controller_properties())
        .await
        .unwrap();
    assert_eq!(
        props.get("BalanceResourcesEnabled").map(String::as_str),
        Some("true")
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn every_verb_changes_what_the_controller_reports() {
    let fake = fake_with(None, 300).await;
    let (reader, writer) = clients(&fake);
    create_placed(&writer, "pvc-1", GIB, 2).await;
    let placed: Vec<_> = fake
        .resources()
        .into_iter()
        .filter(|p| p.resource == "pvc-1")
        .collect();
    assert_eq!(placed.len(), 2);
    assert_eq!(
        fake.free_kib("n5", "pool-ssd"),
        Some(199 * GIB),
        "the biggest pool takes the first replica"
    );

    let view = within("view", reader.resources(&["pvc-1"])).await.unwrap();
    assert!(view
        .iter()
        .all(|r| r.volumes[0].state.disk_state.as_deref() == Some("UpToDate")));
    assert!(view
        .iter()
        .all(|r| r.resource.state.as_ref().and_then(|s| s.in_use) == Some(false)));

    within("snapshot", writer.create_snapshot("pvc-1", "snap1", &[]))
        .await
        .unwrap();
    let snaps = within("snapshots", reader.snapshots("pvc-1"))
        .await
        .unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].nodes.len(), 2);

    within("attach", writer.create_diskless("pvc-1", "n4"))
        .await
        .unwrap();
    let attached = within("view", reader.resources(&["pvc-1"])).await.unwrap();
    let n4 = attached
        .iter()
        .find(|r| r.resource.node_name == "n4")
        .unwrap();
    assert!(n4.resource.is_diskless());
    assert_eq!(n4.volumes[0].state.disk_state.as_deref(), Some("Diskless"));

    within("resize", writer.resize_volume("pvc-1", 0, 2 * GIB))
        .await
        .unwrap();
    let vds = within("vds", reader.volume_definitions("pvc-1"))
        .await
        .unwrap();
    assert_eq!(vds[0].size_kib, 2 * GIB);
    assert_eq!(fake.free_kib("n5", "pool-ssd"), Some(198 * GIB));

    // A move is add-before-remove: the source stays until the new disk has synced.
    let source = placed.iter().find(|p| p.node != "n5").unwrap().node.clone();
    within("attach target", writer.create_diskless("pvc-1", "n6"))
        .await
        .unwrap();
    let toggle = ToggleDisk {
        operation: "INTO_DRBD_DISKFUL".into(),
        storage_pool: Some("pool-ssd".into()),
        migrate_from: Some(source.clone()),
        extra: Default::default(),
    };
    within("toggle", writer.toggle_disk("pvc-1", "n6", &toggle))
        .await
        .unwrap();
    let during = within("view", reader.resources(&["pvc-1"])).await.unwrap();
    let target = during
        .iter()
        .find(|r| r.resource.node_name == "n6")
        .unwrap();
    assert_eq!(
        target.volumes[0].state.disk_state.as_deref(),
        Some("Inconsistent")
    );
    assert!(
        during.iter().any(|r| r.resource.node_name == source),
        "source kept while syncing"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = within("view", reader.resources(&["pvc-1"])).await.unwrap();
    assert!(
        !after.iter().any(|r| r.resource.node_name == source),
        "source removed after sync"
    );
    assert_eq!(
        after
            .iter()
            .find(|r| r.resource.node_name == "n6")
            .unwrap()
            .volumes[0]
            .state
            .disk_state
            .as_deref(),
        Some("UpToDate")
    );

    within("delete replica", writer.delete_resource("pvc-1", "n4"))
        .await
        .unwrap();
    within("delete snapshot", writer.delete_snapshot("pvc-1", "snap1"))
        .await
        .unwrap();
    within("delete rd", writer.delete_resource_definition("pvc-1"))
        .await
        .unwrap();
    assert!(fake.resources().is_empty());
    assert_eq!(
        fake.free_kib("n5", "pool-ssd"),
        Some(200 * GIB),
        "space comes back after delete"
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn not_found_is_permanent_and_carries_linstors_message() {
    let fake = fake().await;
    let (reader, writer) = clients(&fake);
    let err = within("get", reader.resource_definition("nope"))
        .await
        .unwrap_err();
    assert!(err.is_not_found() && !err.is_retriable(), "{err}");
    assert_eq!(err.api_code(), Some(retcode::FAIL_NOT_FOUND_RSC_DFN));
    assert!(
        err.to_string()
            .contains("Resource definition 'nope' not found"),
        "{err}"
    );
    let err = within("delete", writer.delete_resource("nope", "n1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LinstorError::Api { status: 404, .. }),
        "{err:?}"
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn creating_what_exists_is_fine_in_the_same_shape_and_an_error_in_another() {
    let fake = fake().await;
    let (_, writer) = clients(&fake);
    assert_eq!(
        within("rd", writer.ensure_resource_definition("pvc-1", None))
            .await
            .unwrap(),
        Outcome::Changed
    );
    assert_eq!(
        within("rd again", writer.ensure_resource_definition("pvc-1", None))
            .await
            .unwrap(),
        Outcome::Unchanged
    );
    let raw = within("raw rd", writer.create_resource_definition("pvc-1", None))
        .await
        .unwrap_err();
    assert_eq!(raw.api_error().unwrap().ret_code.0, -4611686018406940171);
    let other_group = within(
        "rd other group",
        writer.ensure_resource_definition("pvc-1", Some("rg-ssd")),
    )
    .await
    .unwrap_err();
    assert!(
        other_group
            .to_string()
            .contains("in resource group DfltRscGrp, request asks rg-ssd"),
        "{other_group}"
    );
    assert_eq!(
        within("vd", writer.ensure_volume_definition("pvc-1", 0, GIB))
            .await
            .unwrap(),
        Outcome::Changed
    );
    assert_eq!(
        within("vd again", writer.ensure_volume_definition("pvc-1", 0, GIB))
            .await
            .unwrap(),
        Outcome::Unchanged
    );
    let err = within(
        "vd other size",
        writer.ensure_volume_definition("pvc-1", 0, 2 * GIB),
    )
    .await
    .unwrap_err();
    assert!(!err.is_retriable());
    assert!(
        err.to_string()
            .contains("volume 0 of pvc-1 is 1048576 KiB, request asks 2097152 KiB"),
        "{err}"
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn not_enough_nodes_is_permanent_with_the_criteria_verbatim() {
    let fake = fake().await;
    let (_, writer) = clients(&fake);
    within("rd", writer.create_resource_definition("pvc-1", None))
        .await
        .unwrap();
    within("vd", writer.create_volume_definition("pvc-1", 0, GIB))
        .await
        .unwrap();
    let err = within(
        "autoplace",
        writer.autoplace("pvc-1", &place(4, "pool-ssd", &["Aux/zone"])),
    )
    .await
    .unwrap_err();
    assert!(!err.is_retriable());
    let LinstorError::Api { status, error, .. } = &err else {
        panic!("expected an api error, got {err:?}")
    };
    assert_eq!(*status, 500);
    assert_eq!(error.ret_code.0, -4611686018427386908);
    assert_eq!(error.message, "Not enough available nodes");
    let details = error.details.as_deref().unwrap();
    assert!(
        details.starts_with("Not enough nodes fulfilling the following auto-place criteria:"),
        "{details}"
    );
    assert!(
        details.contains("at least '1048576' free space"),
        "{details}"
    );
    assert!(
        err.reason().contains(details),
        "reason carries the details verbatim"
    );
    // Nothing was placed; placing at a reachable count still works, and again is a success with a warning.
    assert!(fake.resources().is_empty());
    within(
        "autoplace 3",
        writer.autoplace("pvc-1", &place(3, "pool-ssd", &["Aux/zone"])),
    )
    .await
    .unwrap();
    let again = within(
        "autoplace again",
        writer.autoplace("pvc-1", &place(3, "pool-ssd", &["Aux/zone"])),
    )
    .await
    .unwrap();
    assert!(again.has_code(retcode::WARN_RSC_ALREADY_DEPLOYED));
    let unknown_pool = within(
        "autoplace unknown pool",
        writer.autoplace("pvc-1", &place(4, "pool-nvme", &[])),
    )
    .await
    .unwrap_err();
    assert!(
        unknown_pool.reason().contains("pool-nvme"),
        "{}",
        unknown_pool.reason()
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn bearer_token_is_enforced_and_denials_are_permanent() {
    let fake = fake_with(Some("s3cret"), 0).await;
    let anonymous = LinstorConfig::for_controller(&fake.base_url(), None, None)
        .validate()
        .unwrap();
    let err = within("no token", LinstorReader::new(&anonymous).unwrap().nodes())
        .await
        .unwrap_err();
    assert!(err.is_access_denied() && !err.is_retriable(), "{err}");
    assert!(
        matches!(err, LinstorError::Api { status: 401, .. }),
        "{err:?}"
    );
    let err = within(
        "metrics without token",
        LinstorReader::new(&anonymous).unwrap().metrics(),
    )
    .await
    .unwrap_err();
    assert!(
        err.is_access_denied(),
        "/metrics needs the token too: {err}"
    );
    let wrong = LinstorConfig::for_controller(&fake.base_url(), Some("nope"), Some("nope"))
        .validate()
        .unwrap();
    let err = within(
        "wrong token",
        LinstorWriter::new(&wrong)
            .unwrap()
            .create_resource_definition("r", None),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, LinstorError::Api { status: 403, .. }),
        "{err:?}"
    );
    assert!(
        !err.to_string().contains("nope"),
        "errors never show the token: {err}"
    );
    let good = LinstorConfig::for_controller(&fake.base_url(), Some("s3cret"), Some("s3cret"))
        .validate()
        .unwrap();
    let shown = format!("{:?}", LinstorWriter::new(&good).unwrap());
    assert!(
        !shown.contains("s3cret"),
        "debug output never shows the token: {shown}"
    );
    assert_eq!(
        within("with token", LinstorReader::new(&good).unwrap().nodes())
            .await
            .unwrap()
            .len(),
        6
    );
    within(
        "write with token",
        LinstorWriter::new(&good)
            .unwrap()
            .create_resource_definition("r", None),
    )
    .await
    .unwrap();
    let health = within(
        "health",
        reqwest::get(format!("{}/health", fake.base_url())),
    )
    .await
    .unwrap();
    assert_eq!(health.status(), 200, "/health needs no token");
    fake.shutdown().await;
}

#[tokio::test]
async fn a_reader_config_cannot_build_a_writer() {
    let mut config = LinstorConfig::for_controller("linstor://127.0.0.1:1", None, None);
    config.executor = None;
    let err = LinstorWriter::new(&config.validate().unwrap()).unwrap_err();
    assert!(err.to_string().contains("no executor credential"), "{err}");
}

#[tokio::test]
async fn server_errors_timeouts_and_unreachable_controllers_are_retriable() {
    let fake = fake().await;
    let (reader, _) = clients(&fake);
    fake.faults().fail_next(1);
    let err = within("failing", reader.nodes()).await.unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert!(
        matches!(err, LinstorError::Api { status: 500, .. }),
        "{err:?}"
    );
    assert_eq!(within("recovered", reader.nodes()).await.unwrap().len(), 6);
    assert_eq!(fake.faults().injected_failures(), 1);

    fake.faults().fail_fraction(1.0);
    assert!(within("all failing", reader.version())
        .await
        .unwrap_err()
        .is_retriable());
    assert!(within("all failing", reader.storage_pools()).await.is_err());
    fake.faults().fail_fraction(0.0);
    assert!(within("none failing", reader.version()).await.is_ok());

    fake.faults().slow_replies(Duration::from_millis(1500));
    let mut config = LinstorConfig::for_controller(&fake.base_url(), None, None);
    config.timeout_ms = 200;
    let impatient = LinstorReader::new(&config.validate().unwrap()).unwrap();
    let started = std::time::Instant::now();
    let err = within("slow", impatient.nodes()).await.unwrap_err();
    assert!(
        matches!(err, LinstorError::Timeout { .. }) && err.is_retriable(),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "the client gave up at its own timeout"
    );
    fake.faults().clear();

    // A dead controller first in the list: the client moves on to the live one.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = LinstorConfig::for_controller(&format!("linstor://{dead}"), None, None);
    let only_dead = LinstorReader::new(&config.validate().unwrap()).unwrap();
    let err = within("dead", only_dead.nodes()).await.unwrap_err();
    assert!(
        matches!(err, LinstorError::Transport { .. }) && err.is_retriable(),
        "{err:?}"
    );
    config.controllers.push(fake.base_url());
    let failover = LinstorReader::new(&config.validate().unwrap()).unwrap();
    assert_eq!(within("failover", failover.nodes()).await.unwrap().len(), 6);
    fake.shutdown().await;
}

#[tokio::test]
async fn offline_nodes_and_full_pools_are_visible_and_avoided() {
    let fake = fake().await;
    let (reader, writer) = clients(&fake);
    create_placed(&writer, "pvc-1", GIB, 2).await;
    let victim = fake.resources()[0].node.clone();
    assert!(fake.faults().node_offline(&victim));
    let nodes = within("nodes", reader.nodes()).await.unwrap();
    assert_eq!(
        nodes
            .iter()
            .find(|n| n.name == victim)
            .unwrap()
            .connection_status,
        "OFFLINE"
    );
    let view = within("view", reader.resources(&["pvc-1"])).await.unwrap();
    let on_victim = view
        .iter()
        .find(|r| r.resource.node_name == victim)
        .unwrap();
    assert_eq!(
        on_victim.volumes[0].state.disk_state, None,
        "an offline node reports no disk state"
    );
    assert_eq!(
        on_victim.resource.state.as_ref().and_then(|s| s.in_use),
        None
    );
    let snap = within(
        "snapshot while offline",
        writer.create_snapshot("pvc-1", "s", &[]),
    )
    .await
    .unwrap_err();
    assert_eq!(snap.api_code(), Some(retcode::FAIL_NOT_CONNECTED));
    assert!(
        snap.is_retriable(),
        "a disconnected satellite may come back: {snap}"
    );

    assert!(fake.faults().pool_full("n1", "pool-ssd", true));
    let pools = within("pools", reader.storage_pools()).await.unwrap();
    assert_eq!(
        pools
            .iter()
            .find(|p| p.node_name == "n1" && p.storage_pool_name == "pool-ssd")
            .unwrap()
            .free_capacity,
        Some(0)
    );
    within("rd", writer.create_resource_definition("pvc-2", None))
        .await
        .unwrap();
    within("vd", writer.create_volume_definition("pvc-2", 0, GIB))
        .await
        .unwrap();
    within(
        "place",
        writer.autoplace("pvc-2", &place(3, "pool-ssd", &[])),
    )
    .await
    .unwrap();
    let used: Vec<String> = fake
        .resources()
        .into_iter()
        .filter(|p| p.resource == "pvc-2")
        .map(|p| p.node)
        .collect();
    assert_eq!(used.len(), 3);
    assert!(
        !used.contains(&victim) && !used.contains(&"n1".to_owned()),
        "placed on {used:?}"
    );

    fake.faults().node_online(&victim);
    let view = within("view", reader.resources(&["pvc-1"])).await.unwrap();
    assert!(view
        .iter()
        .all(|r| r.volumes[0].state.disk_state.as_deref() == Some("UpToDate")));
    fake.shutdown().await;
}

#[tokio::test]
async fn metrics_and_placement_snapshot_reflect_the_cluster() {
    let fake = fake().await;
    let (reader, writer) = clients(&fake);
    create_placed(&writer, "pvc-1", GIB, 3).await;
    let samples = within("metrics", reader.metrics()).await.unwrap();
    let free = samples
        .iter()
        .find(|s| {
            s.name == "linstor_storage_pool_capacity_free_bytes"
                && s.label("node") == Some("n5")
                && s.label("storage_pool") == Some("pool-ssd")
        })
        .unwrap();
    assert_eq!(free.value, (199 * GIB * 1024) as f64);
    assert_eq!(
        samples
            .iter()
            .find(|s| s.name == "linstor_resource_definition_count")
            .unwrap()
            .value,
        1.0
    );

    within(
        "rd 2",
        writer.create_resource_definition("pvc-2", Some("rg-ssd")),
    )
    .await
    .unwrap();
    within("vd 2", writer.create_volume_definition("pvc-2", 0, GIB))
        .await
        .unwrap();
    within(
        "place 2",
        writer.autoplace("pvc-2", &place(1, "pool-ssd", &[])),
    )
    .await
    .unwrap();
    fake.faults().node_offline("n5");
    fake.faults().evict_node("n5");
    let snapshot = within("placement", PlacementSnapshot::collect(&reader))
        .await
        .unwrap();
    let n5 = snapshot.nodes.iter().find(|n| n.node == "n5").unwrap();
    assert!(!n5.online && n5.evicted);
    assert_eq!(n5.diskful, 2);
    assert_eq!(
        snapshot.under_replicated.len(),
        1,
        "pvc-2 has 1 of the 3 replicas rg-ssd asks for"
    );
    assert_eq!(snapshot.under_replicated[0].place_count, 3);
    assert_eq!(
        snapshot.degraded.len(),
        2,
        "both volumes on the offline node"
    );
    assert_eq!(snapshot.automation.evicted_nodes, vec!["n5".to_owned()]);
    let series: Vec<String> = snapshot
        .to_samples(time::OffsetDateTime::now_utc())
        .into_iter()
        .map(|s| s.series)
        .collect();
    assert!(
        series.contains(&"linstor.pool.free_kib{node=n5,pool=pool-ssd}".to_owned()),
        "{series:?}"
    );
    fake.shutdown().await;
}

fn create(resource: &str, size_kib: u64, place_count: u32, pool: &str) -> VolumeRequest {
    VolumeRequest::Create {
        resource: resource.into(),
        size_kib,
        place_count,
        storage_pool: Some(pool.into()),
        replicas_on_different: vec!["Aux/zone".into()],
        replicas_on_same: vec![],
        resource_group: None,
    }
}

#[tokio::test]
async fn volume_executor_runs_every_request_kind_and_retries_are_harmless() {
    let fake = fake().await;
    let (_, writer) = clients(&fake);
    let executor = VolumeExecutor::new(writer);
    let requests = [
        create("pvc-1", GIB, 2, "pool-ssd"),
        VolumeRequest::Snapshot {
            resource: "pvc-1".into(),
            snapshot: "nightly".into(),
        },
        VolumeRequest::Attach {
            resource: "pvc-1".into(),
            node: "n4".into(),
        },
        VolumeRequest::Resize {
            resource: "pvc-1".into(),
            size_kib: 2 * GIB,
            volume_number: 0,
        },
    ];
    for request in &requests {
        let first = within("execute", executor.execute(request)).await.unwrap();
        assert!(first.ok && !first.already_done, "{request:?} → {first:?}");
        let again = within("execute again", executor.execute(request))
            .await
            .unwrap();
        assert!(
            again.ok && again.already_done,
            "a retried {} converges: {again:?}",
            request.op()
        );
        assert_eq!(first.replicas, again.replicas);
    }
    let reply = within("state", executor.execute(&requests[2]))
        .await
        .unwrap();
    assert_eq!(reply.replicas.len(), 3);
    assert!(reply
        .replicas
        .iter()
        .any(|r| r.node == "n4" && r.diskless && r.disk_state == "Diskless"));
    assert!(reply
        .replicas
        .iter()
        .filter(|r| !r.diskless)
        .all(|r| r.pool == "pool-ssd" && r.disk_state == "UpToDate"));
    let json = serde_json::to_value(&reply).unwrap();
    assert_eq!(json["op"], "attach");
    assert_eq!(json["resource"], "pvc-1");

    let delete = VolumeRequest::Delete {
        resource: "pvc-1".into(),
    };
    assert!(
        !within("delete", executor.execute(&delete))
            .await
            .unwrap()
            .already_done
    );
    assert!(
        within("delete again", executor.execute(&delete))
            .await
            .unwrap()
            .already_done
    );
    assert!(fake.resources().is_empty());
    fake.shutdown().await;
}

#[tokio::test]
async fn volume_executor_separates_permanent_from_retriable_failures() {
    let fake = fake().await;
    let (_, writer) = clients(&fake);
    let executor = VolumeExecutor::new(writer);

    let err = within(
        "unknown pool",
        executor.execute(&create("pvc-1", GIB, 2, "pool-nvme")),
    )
    .await
    .unwrap_err();
    assert!(!err.is_retriable());
    assert!(
        err.reason().starts_with("Not enough available nodes"),
        "{}",
        err.reason()
    );
    assert!(err.reason().contains("pool-nvme"), "{}", err.reason());
    let (reader, _) = clients(&fake);
    let leftover = within("leftover", reader.resource_definition("pvc-1"))
        .await
        .unwrap_err();
    assert!(
        leftover.is_not_found(),
        "the unplaceable definition is removed again: {leftover}"
    );
    let reply =
        trimtab::linstor::ops::VolumeReply::failed(&create("pvc-1", GIB, 2, "pool-nvme"), &err);
    assert!(!reply.ok && reply.error.as_deref() == Some(err.reason().as_str()));

    let err = within(
        "too many",
        executor.execute(&create("pvc-2", GIB, 4, "pool-ssd")),
    )
    .await
    .unwrap_err();
    assert!(
        !err.is_retriable() && err.reason().contains("differ in the values"),
        "{}",
        err.reason()
    );

    let err = within(
        "zero size",
        executor.execute(&create("pvc-3", 0, 2, "pool-ssd")),
    )
    .await
    .unwrap_err();
    assert!(
        !err.is_retriable() && err.to_string().contains("size_kib"),
        "{err}"
    );

    within(
        "create",
        executor.execute(&create("pvc-4", GIB, 2, "pool-ssd")),
    )
    .await
    .unwrap();
    let err = within(
        "other size",
        executor.execute(&create("pvc-4", 2 * GIB, 2, "pool-ssd")),
    )
    .await
    .unwrap_err();
    assert!(!err.is_retriable());
    assert!(
        err.reason()
            .contains("volume 0 of pvc-4 is 1048576 KiB, request asks 2097152 KiB"),
        "{}",
        err.reason()
    );
    let err = within(
        "other pool",
        executor.execute(&create("pvc-4", GIB, 2, "pool-hdd")),
    )
    .await
    .unwrap_err();
    assert!(
        err.reason().contains("request asks pool-hdd"),
        "{}",
        err.reason()
    );
    let shrink = VolumeRequest::Resize {
        resource: "pvc-4".into(),
        size_kib: 1024,
        volume_number: 0,
    };
    let err = within("shrink", executor.execute(&shrink))
        .await
        .unwrap_err();
    assert!(
        !err.is_retriable() && err.reason().contains("cannot shrink"),
        "{}",
        err.reason()
    );

    // A failure mid-create (the definition exists, the volume does not) is fixed by a retry.
    fake.faults().fail_after(1, 1);
    let request = create("pvc-5", GIB, 2, "pool-ssd");
    let err = within("failing create", executor.execute(&request))
        .await
        .unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert!(
        fake.resources().iter().all(|p| p.resource != "pvc-5"),
        "nothing placed yet"
    );
    let reply = within("retry", executor.execute(&request)).await.unwrap();
    assert!(reply.ok && !reply.already_done);
    assert_eq!(reply.replicas.iter().filter(|r| !r.diskless).count(), 2);
    fake.shutdown().await;
}

#[tokio::test]
async fn resource_groups_and_single_objects_round_trip() {
    let fake = fake().await;
    let (reader, writer) = clients(&fake);
    let group = trimtab::linstor::types::ResourceGroup {
        name: "rg-hdd".into(),
        description: "bulk".into(),
        select_filter: AutoSelectFilter {
            place_count: Some(3),
            storage_pool_list: Some(vec!["pool-hdd".into()]),
            ..AutoSelectFilter::default()
        },
        ..Default::default()
    };
    within("create group", writer.create_resource_group(&group))
        .await
        .unwrap();
    let read = within("get group", reader.resource_group("rg-hdd"))
        .await
        .unwrap();
    assert_eq!(read.select_filter.place_count, Some(3));
    assert_eq!(read.description, "bulk");
    let err = within("create group again", writer.create_resource_group(&group))
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some(retcode::FAIL_EXISTS_RSC_GRP));
    let missing = within("missing group", reader.resource_group("nope"))
        .await
        .unwrap_err();
    assert!(missing.is_not_found(), "{missing}");

    // A definition in the group is placed by the group's filter when the request gives none.
    within(
        "rd",
        writer.create_resource_definition("bulk-1", Some("rg-hdd")),
    )
    .await
    .unwrap();
    within("vd", writer.create_volume_definition("bulk-1", 0, GIB))
        .await
        .unwrap();
    within(
        "place",
        writer.autoplace("bulk-1", &AutoPlaceRequest::default()),
    )
    .await
    .unwrap();
    let placed: Vec<_> = fake
        .resources()
        .into_iter()
        .filter(|p| p.resource == "bulk-1")
        .collect();
    assert_eq!(placed.len(), 3);
    assert!(
        placed.iter().all(|p| p.pool.as_deref() == Some("pool-hdd")),
        "{placed:?}"
    );
    let definitions = within("definitions", reader.resource_definitions())
        .await
        .unwrap();
    assert_eq!(
        definitions[0].resource_group_name.as_deref(),
        Some("rg-hdd")
    );
    assert_eq!(
        definitions[0].volume_definitions.as_ref().unwrap()[0].size_kib,
        GIB
    );

    let node = within("node", reader.node("n4")).await.unwrap();
    assert_eq!(node.props.get("Aux/zone").map(String::as_str), Some("z2"));
    let missing = within("missing node", reader.node("n9")).await.unwrap_err();
    assert_eq!(missing.api_code(), Some(retcode::FAIL_NOT_FOUND_NODE));
    fake.shutdown().await;
}
