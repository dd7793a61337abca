//! The operator page in real headless chromium over a running agent on the stand-ins: it loads, its charts draw
//! the API's data points (depth, lag, forecast against actual, placement), and approving a proposal and pausing
//! from the page change the state the API and the audit log report.

mod web_support;

use std::time::Duration;

use serde_json::Value;
use trimtab::api::Tokens;
use trimtab::policy::Mode;
use web_support::*;

/// Whether every drawn `[t, v]` of every drawn series is a sample of the API series whose `label_key` label is the
/// drawn series' label; the error names the first point that is not.
fn drawn_points_come_from_the_api(
    drawn: &Value,
    api: &Value,
    label_key: &str,
) -> Result<usize, String> {
    let mut checked = 0;
    for s in drawn["series"].as_array().ok_or("no drawn series")? {
        let label = s["label"].as_str().unwrap_or_default();
        let source = api["series"]
            .as_array()
            .and_then(|all| {
                all.iter().find(|w| {
                    w["labels"][label_key] == label
                        || (w["labels"][label_key].is_null() && w["name"] == label)
                })
            })
            .ok_or(format!("drawn series {label} is not in the API's series"))?;
        let samples = source["samples"].as_array().unwrap();
        for p in s["points"].as_array().unwrap() {
            let (t, v) = (p[0].as_i64().unwrap(), p[1].as_f64().unwrap());
            let found = samples.iter().any(|x| {
                x["at"].as_i64() == Some(t) && (x["value"].as_f64().unwrap() - v).abs() < 1e-9
            });
            if !found {
                return Err(format!(
                    "drawn point ({t}, {v}) of {label} is not an API sample"
                ));
            }
            checked += 1;
        }
    }
    Ok(checked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_draws_the_running_agents_data_and_approves_a_proposal() {
    ensure_browser().await;
    let mut stand = Stand::start(Mode::Recommend, Tokens::fixed(Some(WRITE_TOKEN), None)).await;
    stand.start_traffic();
    stand.force_placement_proposal().await;

    // The agent has enough to draw: depth samples, a forecast, placement and an open proposal.
    let id = until!(
        Duration::from_secs(120),
        "the agent never had depth, a forecast, placement and an open proposal",
        {
            let (_, depth) = stand.get("/v1/metrics/series?name=queue_active").await;
            let (_, forecasts) = stand.get("/v1/forecasts").await;
            let (_, placement) = stand.get("/v1/placement").await;
            let samples = depth["series"][0]["samples"].as_array().map_or(0, Vec::len);
            let forecast = forecasts["forecasts"].as_array().map_or(0, Vec::len);
            let pools = placement["placement"]["pools"]
                .as_array()
                .map_or(0, Vec::len);
            let open = stand
                .proposals()
                .await
                .into_iter()
                .find(|p| {
                    matches!(
                        p["status"]["state"].as_str(),
                        Some("recommended" | "pending")
                    )
                })
                .and_then(|p| p["id"].as_str().map(str::to_string));
            match open {
                    Some(id) if samples >= 5 && forecast > 0 && pools > 0 => Ok(id),
                    _ => Err(format!(
                        "depth samples {samples}, forecasts {forecast}, pools {pools}, open proposal {open:?}"
                    )),
                }
        }
    );

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let page = driver.session(profile.path()).await;
    page.goto(&format!("{}/?poll=500", stand.url)).await;

    let script = "const d = (id) => Number(document.getElementById(id).dataset.points || 0);
        return { polls: window.trimtab ? window.trimtab.polls : 0, depth: d('chart-depth'), lag: d('chart-lag'),
                 forecast: d('chart-forecast'),
                 cells: Number(document.getElementById('placement').dataset.cells || 0),
                 row: !!document.querySelector('tr[data-id]'),
                 errors: window.trimtab ? window.trimtab.errors : [] };";
    until!(
        Duration::from_secs(30),
        "the page never drew every chart",
        {
            let v = page.run(script).await;
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            if n("polls") >= 2
                && n("depth") >= 5
                && n("lag") >= 1
                && n("forecast") >= 2
                && n("cells") >= 1
                && v["row"] == true
            {
                Ok(())
            } else {
                Err(v.to_string())
            }
        }
    );

    // What the charts drew are the API's own samples.
    // One script call, so the legend and the points come from the same redraw.
    let seen = page
        .run("return { drawn: window.trimtab.drawn, legend: document.getElementById('legend-depth').textContent };")
        .await;
    let drawn = &seen["drawn"];
    let last = drawn["chart-depth"]["series"][0]["points"]
        .as_array()
        .and_then(|p| p.last().cloned())
        .expect("a drawn depth point");
    let shown = format!(
        "{QUEUE}: {} messages",
        last[1].as_f64().unwrap().round() as i64
    );
    assert!(
        seen["legend"].as_str().unwrap().contains(&shown),
        "the depth legend does not show the last drawn value {shown:?}: {}",
        seen["legend"]
    );
    let (_, depth) = stand.get("/v1/metrics/series?name=queue_active").await;
    let n = drawn_points_come_from_the_api(&drawn["chart-depth"], &depth, "entity").unwrap();
    assert!(n >= 5, "only {n} depth points drawn");
    assert_eq!(drawn["chart-depth"]["series"][0]["label"], QUEUE);
    let (_, lag) = stand.get("/v1/metrics/series?name=lag_oldest_age_s").await;
    drawn_points_come_from_the_api(&drawn["chart-lag"], &lag, "key").unwrap();

    let (_, forecasts) = stand.get("/v1/forecasts").await;
    let chart = &drawn["chart-forecast"];
    let name = page
        .run("return document.getElementById('legend-forecast').textContent;")
        .await;
    let name = name
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_string();
    let api_forecast = forecasts["forecasts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name.as_str())
        .unwrap_or_else(|| panic!("the legend's series {name} is not in the API's forecasts"));
    let actual = serde_json::json!({ "series": [{ "labels": { "series": "actual" }, "samples": api_forecast["actual"] }] });
    let only_actual = serde_json::json!({ "series": [chart["series"][0]] });
    let n = drawn_points_come_from_the_api(&only_actual, &actual, "series").unwrap();
    assert!(n >= 2, "actual drawn with {n} points");
    let ahead = chart["series"][2]["points"].as_array().unwrap();
    assert!(!ahead.is_empty(), "no forecast points drawn: {chart}");
    let band = chart["band"].as_array().unwrap();
    assert!(!band.is_empty(), "no interval drawn: {chart}");
    for b in band {
        assert!(
            b[1].as_f64().unwrap() <= b[2].as_f64().unwrap(),
            "interval upside down: {b}"
        );
    }

    let (_, placement) = stand.get("/v1/placement").await;
    let mut api_cells: Vec<(String, String, u64)> = placement["placement"]["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["node"].as_str().unwrap().into(),
                p["pool"].as_str().unwrap().into(),
                p["replicas"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut page_cells: Vec<(String, String, u64)> = drawn["placement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["node"].as_str().unwrap().into(),
                p["pool"].as_str().unwrap().into(),
                p["replicas"].as_u64().unwrap(),
            )
        })
        .collect();
    api_cells.sort();
    page_cells.sort();
    assert_eq!(
        page_cells, api_cells,
        "the placement drawn is not what the API reports"
    );
    assert!(page_cells
        .iter()
        .any(|(n, p, r)| n == "n1" && p == "pool-ssd" && *r >= 1));

    // Approve from the page with the token typed in: the API and the audit log see it.
    let token = page.find("#token").await;
    page.type_into(&token, WRITE_TOKEN).await;
    let by = page.find("#by").await;
    page.clear(&by).await;
    page.type_into(&by, "carol").await;
    // The agent keeps one open recommendation per target, so the proposal seen earlier may have been replaced
    // by a newer one for the same target. Click the approve button of a proposal that is open now; the page
    // redraws a row when its proposal changes, so find and click again if the button went stale.
    let id = until!(
        Duration::from_secs(60),
        "approving an open proposal on the page did not approve it",
        {
            let mut last = format!("no open proposal (first seen: {id})");
            let mut clicked = None;
            for open in stand.proposals().await.into_iter().filter(|p| {
                matches!(
                    p["status"]["state"].as_str(),
                    Some("recommended" | "pending")
                )
            }) {
                let Some(candidate) = open["id"].as_str() else {
                    continue;
                };
                let selector = format!("button[data-approve=\"{candidate}\"]");
                let shown = page
                    .run(&format!(
                        "return !!document.querySelector('{}');",
                        selector.replace('\'', "\\'")
                    ))
                    .await;
                if shown != true {
                    last =
                        format!("open proposal {candidate} has no approve button on the page yet");
                    continue;
                }
                let button = page.find(&selector).await;
                if let Err(e) = page.try_click(&button).await {
                    last = e;
                    continue;
                }
                // The click approves it, unless a newer recommendation superseded it first: then try another.
                let mut state = String::new();
                for _ in 0..40 {
                    let (_, p) = stand.get(&format!("/v1/proposals/{candidate}")).await;
                    if p["status"]["state"] == "approved" && p["status"]["by"] == "carol" {
                        clicked = Some(candidate.to_string());
                        break;
                    }
                    state = p["status"].to_string();
                    if p["status"]["state"] == "expired" {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                if clicked.is_some() {
                    break;
                }
                last = format!("clicked approve on {candidate}, but its status is {state}");
            }
            clicked.ok_or(last)
        }
    );
    let (_, audit) = stand.get("/v1/audit?limit=500").await;
    assert!(
        audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "approval"
                && r["actor"] == "carol"
                && r["subject"] == id.as_str()),
        "{audit}"
    );
    let row_state = format!(
        "return (document.querySelector('tr[data-id=\"{id}\"] td.state') || {{}}).textContent;"
    );
    until!(
        Duration::from_secs(10),
        "the page never showed the proposal approved",
        {
            let v = page.run(&row_state).await;
            (v == "approved").then_some(()).ok_or(v.to_string())
        }
    );

    // Pause from the page: the mode says so, on the page and in the API.
    let pause = page.find("#pause").await;
    page.click(&pause).await;
    until!(
        Duration::from_secs(10),
        "pausing on the page did not pause",
        {
            let (_, m) = stand.get("/v1/mode").await;
            let shown = page
                .run("return document.getElementById('mode').dataset.paused;")
                .await;
            (m["paused"]["by"] == "carol" && shown == "true")
                .then_some(())
                .ok_or(format!("api {m}, page {shown}"))
        }
    );

    page.quit().await;
    drop(driver);
    stand.stop().await;
}
