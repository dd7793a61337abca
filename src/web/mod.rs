//! The operator's web page, served by trimtab itself at `/`: one HTML file, one script, one style sheet, all
//! compiled into the binary. The script polls the JSON API and draws its charts on canvas and SVG.

use axum::http::header;
use axum::response::IntoResponse;

/// The page.
pub const INDEX_HTML: &str = include_str!("index.html");
/// The page's script: polling, charts, proposal and kill-switch actions.
pub const APP_JS: &str = include_str!("app.js");
/// The page's style sheet.
pub const APP_CSS: &str = include_str!("app.css");

/// Headers every asset carries: the page is always fetched fresh, so an upgrade never mixes versions.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// `GET /`.
pub async fn page() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /assets/app.js`.
pub async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /assets/app.css`.
pub async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}
