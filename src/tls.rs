//! TLS clients (LDAPS and StartTLS to the directory, TLS to PostgreSQL): rustls with ring,
//! trusting the configured CA file alone, or else the system's roots.

use std::sync::Arc;

/// A TLS client that trusts the certificates of `ca_file` alone (rustls with ring).
pub fn client_config(ca_file: &std::path::Path) -> Result<rustls::ClientConfig, String> {
    let shown = ca_file.display();
    let pem = crate::settings::read_text_file(ca_file, 16 * 1024 * 1024).map_err(|e| format!("ca_file {shown}: {e}"))?.into_bytes();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("ca_file {shown}: {e}"))?;
        roots.add(cert).map_err(|e| format!("ca_file {shown}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("ca_file {shown}: no PEM certificate in it"));
    }
    with_roots(roots)
}

/// A TLS client that trusts the system's certificate authorities (Debian's ca-certificates,
/// or `SSL_CERT_FILE`).
pub fn system_client_config() -> Result<rustls::ClientConfig, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found.errors.first().map(|e| format!(": {e}")).unwrap_or_default();
        return Err(format!("the system has no CA certificates to verify a server with (install ca-certificates, or set ca_file){why}"));
    }
    with_roots(roots)
}

/// A TLS client that trusts `roots`.
pub fn with_roots(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
