//! The official Python `fal-client` against the simulator over HTTPS: submit, status with
//! logs, `iter_events`, `get`, `result`/`status` by request id and `subscribe`, on
//! `fal-ai/esrgan` with a `data:` URI. The client builds `https://{FAL_QUEUE_RUN_HOST}/`
//! URLs, so the simulator serves TLS and the client (httpx) trusts its CA through
//! `SSL_CERT_FILE` (httpx ignores `REQUESTS_CA_BUNDLE`).
//!
//! `fal_client` must be importable by `python3`: `make test` installs it (`.ci/deps.sh`).

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use atelier_fal_sim::SimConfig;
use common::{Sim, png_data_uri, quick};
use serde_json::Value;

/// How long the Python script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

const SCRIPT: &str = r#"
import json, sys

import fal_client
import httpx

app = "fal-ai/esrgan"
with open(sys.argv[1]) as f:
    image_url = f.read()

handle = fal_client.submit(app, arguments={"image_url": image_url, "scale": 2})
first = handle.status(with_logs=True)
events = [type(event).__name__ for event in handle.iter_events(with_logs=True, interval=0.05)]
final = handle.status(with_logs=True)
assert isinstance(final, fal_client.Completed), final
assert final.error is None, final
result = handle.get()

# The module-level calls rebuild the URLs from the app id and request id.
assert fal_client.result(app, handle.request_id) == result
by_id = fal_client.status(app, handle.request_id, with_logs=True)
assert isinstance(by_id, fal_client.Completed), by_id

updates = []
subscribed = fal_client.subscribe(
    app,
    arguments={"image_url": image_url},
    with_logs=True,
    on_queue_update=lambda update: updates.append(type(update).__name__),
)
assert subscribed["image"]["width"] == result["image"]["width"], subscribed

# A bad input surfaces as the client's HTTP error with fal's 422 details.
bad = fal_client.submit(app, arguments={"scale": 2})
try:
    bad.get()
    raise AssertionError("a 422 was expected")
except fal_client.FalClientHTTPError as error:
    assert error.status_code == 422, error
    validation = str(error)

download = httpx.get(result["image"]["url"])
download.raise_for_status()

print(json.dumps({
    "request_id": handle.request_id,
    "first": type(first).__name__,
    "events": events,
    "logs": len(final.logs or []),
    "metrics": final.metrics,
    "result": result,
    "updates": updates,
    "validation": validation,
    "downloaded": len(download.content),
    "content_type": download.headers.get("content-type"),
}))
"#;

/// Runs `python3` with `args`, within [`SCRIPT_TIMEOUT`]; returns (success, stdout, stderr).
fn python(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new("python3");
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in [
        "FAL_RUN_HOST",
        "FAL_KEY_ID",
        "FAL_KEY_SECRET",
        "REQUESTS_CA_BUNDLE",
    ] {
        command.env_remove(name);
    }
    command.envs(envs.iter().copied());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("running python3 failed ({e}): run `make test`, which sets up Python and fal-client through .ci/deps.sh"));
    let started = Instant::now();
    loop {
        match child.try_wait().expect("waiting for python3") {
            Some(_) => break,
            None if started.elapsed() > SCRIPT_TIMEOUT => {
                let _ = child.kill();
                panic!("the python script did not finish within {SCRIPT_TIMEOUT:?}");
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let output = child.wait_with_output().expect("reading python3's output");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_works_against_the_simulator() {
    let (importable, _, stderr) =
        tokio::task::spawn_blocking(|| python(&["-c", "import fal_client, httpx"], &[]))
            .await
            .expect("the check ran");
    assert!(
        importable,
        "the Python package fal-client is not importable by python3 ({}): run `make test`, \
         which installs it through .ci/deps.sh, or `python3 -m pip install fal-client`",
        stderr.trim()
    );

    let sim = Sim::start(SimConfig {
        tls: true,
        processing_time: Duration::from_millis(150),
        ..quick()
    })
    .await;
    let port = sim.handle.local_addr().port();
    let dir = tempfile::tempdir().expect("a temp dir");
    let cert = dir.path().join("fal-sim-ca.pem");
    std::fs::write(
        &cert,
        sim.handle.tls_certificate_pem().expect("a certificate"),
    )
    .expect("writing the certificate");
    let script = dir.path().join("client.py");
    std::fs::write(&script, SCRIPT).expect("writing the script");
    let image = dir.path().join("image.txt");
    std::fs::write(&image, png_data_uri(40, 30)).expect("writing the image");

    let host = format!("127.0.0.1:{port}");
    let cert_path = cert.display().to_string();
    let script_path = script.display().to_string();
    let image_path = image.display().to_string();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        python(
            &[&script_path, &image_path],
            &[
                ("FAL_KEY", "test"),
                ("FAL_QUEUE_RUN_HOST", &host),
                ("SSL_CERT_FILE", &cert_path),
                ("NO_PROXY", "127.0.0.1,localhost"),
                ("no_proxy", "127.0.0.1,localhost"),
            ],
        )
    })
    .await
    .expect("the script ran");
    assert!(ok, "the python script failed:\n{stderr}\n{stdout}");
    let report: Value = serde_json::from_str(
        stdout
            .lines()
            .last()
            .unwrap_or_else(|| panic!("no output; stderr:\n{stderr}")),
    )
    .expect("a JSON report");

    assert!(
        ["Queued", "InProgress", "Completed"].contains(&report["first"].as_str().unwrap_or("")),
        "{report}"
    );
    let events: Vec<&str> = report["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(events.last(), Some(&"Completed"), "{report}");
    assert!(report["logs"].as_u64().is_some_and(|n| n > 0), "{report}");
    assert!(report["metrics"]["inference_time"].is_number(), "{report}");
    assert!(
        report["validation"]
            .as_str()
            .is_some_and(|v| v.contains("image_url")),
        "{report}"
    );
    assert_eq!(report["content_type"], "image/png");

    let file = &report["result"]["image"];
    let url = file["url"].as_str().expect("an image url");
    assert!(
        url.starts_with(&format!("https://127.0.0.1:{port}/files/")),
        "{url}"
    );
    let image = sim.image(file).await;
    assert_eq!((image.width(), image.height()), (80, 60));
    assert_eq!(report["downloaded"], file["file_size"]);
    assert_eq!(sim.handle.submissions_to("fal-ai/esrgan"), 3);
}
