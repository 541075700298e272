//! `broker serve` over TLS: a self-signed certificate made here with `openssl`, a client that
//! trusts it (curl `--cacert`), plain HTTP refused on the HTTPS port, and clear errors for a
//! certificate or key that cannot be used.

use std::path::Path;
use std::process::Command;

use super::client::Served;
use crate::util::{BrokerDir, SETTINGS, output, stderr};

/// Makes a self-signed certificate for `localhost` and 127.0.0.1 (`cert.pem`, `key.pem`) and a
/// second key that is not its (`other-key.pem`) in `dir`.
pub fn make_certificate(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = output(Command::new("openssl").args(args).current_dir(dir));
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        // No CA: rustls (the remote CLI's client) takes a self-signed certificate as the server's
        // own only then.
        "-addext",
        "basicConstraints=critical,CA:FALSE",
    ]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "other-key.pem",
    ]);
}

/// `curl ARGS… URL` with the token; its exit code and stdout.
fn curl(args: &[&str], token: &str, url: &str) -> (Option<i32>, String) {
    let out = output(
        Command::new("curl")
            .args(["-sS", "--max-time", "30"])
            .args(args)
            .args(["-H", &format!("Authorization: Bearer {token}"), url]),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn serve_tls_on_a_non_loopback_address_with_the_settings_certificate_and_plain_http_refused() {
    let dir = BrokerDir::new(&format!(
        "{SETTINGS}serve:\n  tls:\n    certificate: cert.pem\n    key: key.pem\n"
    ));
    make_certificate(dir.path());
    let token = dir.ok(&["serve", "token", "add", "r", "--role", "read"]);
    let served = Served::start_with(&dir, &["--listen", "0.0.0.0:0"]);
    assert!(
        served
            .stderr()
            .contains(&format!("listening on https://{}", served.addr)),
        "{}",
        served.stderr()
    );
    let port = served.addr.rsplit(':').next().unwrap().to_owned();
    let cacert = dir.path().join("cert.pem");
    let cacert = cacert.to_str().unwrap();
    let url = |path: &str| format!("https://127.0.0.1:{port}{path}");
    assert_eq!(
        curl(&["--cacert", cacert], "", &url("/health")),
        (Some(0), r#"{"status":"ok"}"#.to_owned())
    );
    assert_eq!(
        curl(&["--cacert", cacert], token.trim(), &url("/api/v1/hosts")),
        (Some(0), "[]".to_owned())
    );
    // A client that does not trust the certificate stops at it (curl: 60, peer certificate).
    assert_eq!(curl(&[], "", &url("/health")).0, Some(60));
    // Plain HTTP on the HTTPS port gets no HTTP answer: the handshake fails and the connection ends.
    let plain = served.raw(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(plain.status, 0, "{plain:?}");
    assert!(!plain.body.contains("ok"), "{plain:?}");
    let (code, log) = served.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("without TLS"), "{log}");
}

#[test]
fn serve_tls_refuses_a_missing_certificate_a_key_that_is_not_its_or_not_a_key() {
    let dir = BrokerDir::new(SETTINGS);
    make_certificate(dir.path());
    let file = |name: &str| dir.path().join(name).display().to_string();
    let serve = |certificate: &str, key: &str| {
        let out = dir.run(&[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--tls-certificate",
            &file(certificate),
            "--tls-key",
            &file(key),
        ]);
        (out.status.code(), stderr(&out))
    };
    let (code, err) = serve("missing.pem", "key.pem");
    assert_eq!(code, Some(8), "{err}");
    assert!(
        err.contains(&format!(
            "error: cannot read the TLS certificate {}: No such file or directory",
            file("missing.pem")
        )),
        "{err}"
    );
    let (code, err) = serve("cert.pem", "other-key.pem");
    assert_eq!(code, Some(8), "{err}");
    assert!(
        err.contains(&format!(
            "error: the TLS key {} does not go with the certificate {}",
            file("other-key.pem"),
            file("cert.pem")
        )),
        "{err}"
    );
    let (code, err) = serve("cert.pem", "cert.pem");
    assert_eq!(code, Some(8), "{err}");
    assert!(
        err.contains(&format!(
            "error: the TLS key {} is not a PEM key",
            file("cert.pem")
        )),
        "{err}"
    );
    let (code, err) = serve("key.pem", "key.pem");
    assert_eq!(code, Some(8), "{err}");
    assert!(
        err.contains(&format!(
            "error: the TLS certificate {} is not a PEM certificate",
            file("key.pem")
        )),
        "{err}"
    );
    // One flag without the other is a usage error; one setting without the other, configuration.
    let out = dir.run(&["serve", "--tls-certificate", &file("cert.pem")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let half = BrokerDir::new(&format!("{SETTINGS}serve:\n  tls:\n    key: key.pem\n"));
    let out = half.run(&["serve"]);
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`serve.tls.certificate` and `serve.tls.key` go together"),
        "{}",
        stderr(&out)
    );
}
