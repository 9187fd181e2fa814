//! The clamd client against a real clamd of the test's own (see
//! `atelier_testkit::clamd`): clean, found, over clamd's size limit, and clamd
//! away, over TCP and a Unix socket.

use std::time::{Duration, Instant};

use atelier_scan::{Clamd, ClamdConfig, ScanError, Scanner, Unavailable, Verdict};
use atelier_testkit::clamd::{self, Clamd as TestClamd};

fn scanner(address: &str, unavailable: Unavailable) -> Clamd {
    let mut config = ClamdConfig::new(address.parse().expect("address"));
    config.connect_timeout = Duration::from_secs(2);
    config.io_timeout = Duration::from_secs(20);
    config.unavailable = unavailable;
    Clamd::new(config)
}

/// Scans `bytes` sent in `chunk`-sized pieces, as an upload arrives.
async fn scan(scanner: &Clamd, bytes: &[u8], chunk: usize) -> Result<Verdict, ScanError> {
    let mut scan = scanner.open().await?;
    for piece in bytes.chunks(chunk) {
        scan.write(piece).await?;
    }
    scan.verdict().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_files_pass_and_eicar_is_found_wherever_it_is() {
    let clamd = TestClamd::start().expect("clamd");
    let scanner = scanner(&clamd.address(), Unavailable::Refuse);
    scanner.ping().await.expect("PONG");

    let png = atelier_testkit::fixtures::png(300, 200);
    assert_eq!(scan(&scanner, &png, 1000).await, Ok(Verdict::Clean));

    // The plain file, by its hash or its body.
    let found = scan(&scanner, &clamd::eicar(), 7).await.expect("verdict");
    let Verdict::Infected(signature) = found else {
        panic!("plain EICAR not found: {found:?}");
    };
    assert!(signature.starts_with("Eicar-Test-"), "{signature}");

    // Inside a valid image, split across chunks.
    let infected = clamd::png_with_eicar(300, 200);
    for chunk in [10, 4096, 64 * 1024] {
        let found = scan(&scanner, &infected, chunk).await.expect("verdict");
        assert!(
            matches!(&found, Verdict::Infected(name) if name.starts_with(clamd::SIGNATURE)),
            "{found:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_clamds_stream_limit_is_a_failed_scan_never_clean() {
    let clamd = TestClamd::start().expect("clamd");
    let scanner = scanner(&clamd.address(), Unavailable::Refuse);
    let big = vec![0x5a; clamd::STREAM_MAX_BYTES as usize + 1024 * 1024];
    let scanned = scan(&scanner, &big, 64 * 1024).await;
    assert!(
        matches!(&scanned, Err(ScanError::Failed(why)) if why.contains("size limit")),
        "{scanned:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clamd_that_is_away_is_unavailable_or_waited_for() {
    let mut clamd = TestClamd::start().expect("clamd");
    let address = clamd.address();
    clamd.stop();

    let refusing = scanner(&address, Unavailable::Refuse);
    let started = Instant::now();
    let refused = refusing.open().await.map(|_| ());
    assert!(
        matches!(&refused, Err(ScanError::Unavailable(why)) if why.contains(&address)),
        "{refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once"
    );

    // Waiting, up to a bound: fails closed after it...
    let waiting = scanner(&address, Unavailable::Wait(Duration::from_millis(800)));
    let started = Instant::now();
    let refused = waiting.open().await.map(|_| ());
    assert!(matches!(refused, Err(ScanError::Unavailable(_))));
    assert!(started.elapsed() >= Duration::from_millis(800));

    // ...and scans once clamd is back within it.
    let waiting = scanner(&address, Unavailable::Wait(Duration::from_secs(30)));
    let back = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(700));
        clamd.restart().expect("clamd back");
        clamd
    });
    let verdict = scan(&waiting, &clamd::eicar(), 68).await;
    let _clamd = back.await.expect("restart");
    assert!(matches!(&verdict, Ok(Verdict::Infected(_))), "{verdict:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clamd_is_reached_over_a_unix_socket_too() {
    let clamd = TestClamd::start().expect("clamd");
    let local = scanner(&clamd.socket_address(), Unavailable::Refuse);
    local.ping().await.expect("PONG");
    let png = atelier_testkit::fixtures::png(64, 64);
    assert_eq!(scan(&local, &png, 1000).await, Ok(Verdict::Clean));
    let found = scan(&local, &clamd::png_with_eicar(64, 64), 1000).await;
    assert!(matches!(found, Ok(Verdict::Infected(_))), "{found:?}");

    let missing = scanner("unix:/nonexistent/clamd.ctl", Unavailable::Refuse);
    assert!(matches!(
        missing.open().await.map(|_| ()),
        Err(ScanError::Unavailable(_))
    ));
}
