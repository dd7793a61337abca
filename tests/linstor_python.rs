//! Conformance: python-linstor 1.29.1, a client nobody on the team wrote, drives the fake controller end to end.

mod common;

use std::time::Duration;

use serde_json::Value;
use trimtab::sim::linstor::{FakeLinstor, FakeLinstorConfig};

const GIB: u64 = 1024 * 1024;
const RD_EXISTS: i64 = -4611686018406940171;
const NOT_ENOUGH_NODES: i64 = -4611686018427386908;
const MISSING_CREDENTIALS: i64 = -4611686018427377903;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_linstor_reads_back_what_it_asked_for() {
    let fake = FakeLinstor::start(FakeLinstorConfig::default())
        .await
        .expect("fake starts");
    let secured = FakeLinstor::start(FakeLinstorConfig {
        token: Some("py-token".into()),
        ..FakeLinstorConfig::default()
    })
    .await
    .expect("secured fake starts");
    let url = fake.base_url().replace("http://", "linstor://");
    let secured_url = secured.base_url().replace("http://", "linstor://");
    let stdout = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::task::spawn_blocking(move || {
            common::run_script("linstor_conformance.py", &[&url, &secured_url, "py-token"])
        }),
    )
    .await
    .expect(
        "python-linstor script did not finish within 600 s (venv creation included); likely hung",
    )
    .expect("script task panicked");
    let out: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("summary is not json ({e}): {stdout}"));

    assert_eq!(out["rest_api_version"], "1.28.0");
    let nodes = out["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 6);
    assert!(nodes.iter().all(|n| n["status"] == "ONLINE"));
    assert_eq!(nodes[0]["name"], "n1");
    assert_eq!(nodes[0]["zone"], "z1");

    let pools = out["pools"].as_array().unwrap();
    let ssd_n5 = pools
        .iter()
        .find(|p| p["node"] == "n5" && p["pool"] == "pool-ssd")
        .unwrap();
    assert_eq!(ssd_n5["kind"], "LVM_THIN");
    assert_eq!(ssd_n5["total_kib"], 200 * GIB);
    assert_eq!(ssd_n5["free_kib"], 200 * GIB);
    assert!(pools.iter().any(|p| p["kind"] == "DISKLESS"));

    let all_success = |key: &str| {
        let replies = out[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} missing in {out}"));
        assert!(!replies.is_empty(), "{key} has replies");
        assert!(
            replies
                .iter()
                .all(|r| r["is_success"] == true && r["is_error"] == false),
            "{key}: {replies:?}"
        );
    };
    for key in [
        "rd_create",
        "vd_create",
        "autoplace",
        "snapshot",
        "attach",
        "detach",
    ] {
        all_success(key);
    }
    assert_eq!(out["rd_exists"][0]["ret_code"], RD_EXISTS);
    assert_eq!(out["rd_exists"][0]["is_error"], true);
    assert_eq!(out["rd_exists_is_fail_exists_rsc_dfn"], true);
    let again = &out["autoplace_again"][0];
    assert_eq!(
        again["is_error"], false,
        "placing at the current count is not an error"
    );
    assert_eq!(again["is_warning"], true);

    let resources = out["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 2);
    assert!(resources
        .iter()
        .all(|r| r["pool"] == "pool-ssd" && r["disk_state"] == "UpToDate" && r["in_use"] == false));
    let placed_nodes: Vec<&str> = resources
        .iter()
        .map(|r| r["node"].as_str().unwrap())
        .collect();
    assert_eq!(
        placed_nodes,
        vec!["n1", "n5"],
        "most free space first (n5), then a different zone by name"
    );

    assert_eq!(out["snapshots"][0]["name"], "snap1");
    assert_eq!(out["snapshots"][0]["resource"], "pvc-py");
    assert_eq!(
        out["snapshots"][0]["nodes"],
        serde_json::json!(["n1", "n5"])
    );

    let attached = out["resources_attached"].as_array().unwrap();
    let n4 = attached
        .iter()
        .find(|r| r["node"] == "n4")
        .expect("diskless replica on n4");
    assert!(n4["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "DISKLESS"));
    assert_eq!(n4["disk_state"], "Diskless");
    assert_eq!(out["resources_detached"].as_array().unwrap().len(), 2);

    let refused = &out["not_enough_nodes"][0];
    assert_eq!(refused["ret_code"], NOT_ENOUGH_NODES);
    assert_eq!(refused["is_error"], true);
    assert_eq!(refused["is_success"], false);
    assert_eq!(refused["message"], "Not enough available nodes");
    assert_eq!(out["not_enough_nodes_is_fail_not_enough_nodes"], true);
    assert!(out["not_enough_nodes_details"]
        .as_str()
        .unwrap()
        .starts_with("Not enough nodes fulfilling the following auto-place criteria:"));

    assert_eq!(out["ssd_free_after"]["n5"], 199 * GIB);
    assert_eq!(out["ssd_free_after"]["n1"], 99 * GIB);
    assert_eq!(out["ssd_free_after"]["n2"], 100 * GIB);

    assert_eq!(out["no_token"]["ret_code"], MISSING_CREDENTIALS);
    assert_eq!(out["no_token"]["is_error"], true);
    assert_eq!(out["with_token_nodes"], 6);

    // The fake's own state agrees with what the client read.
    let held: Vec<_> = fake
        .resources()
        .into_iter()
        .filter(|p| p.resource == "pvc-py")
        .map(|p| p.node)
        .collect();
    assert_eq!(held, vec!["n1".to_owned(), "n5".to_owned()]);
    fake.shutdown().await;
    secured.shutdown().await;
}
