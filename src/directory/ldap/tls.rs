//! TLS for LDAPS and StartTLS: a client that trusts the configured CA file alone.

use std::sync::Arc;

/// A TLS client that trusts the certificates of `ca_file` alone (rustls with ring).
pub(crate) fn client_config(ca_file: &std::path::Path) -> Result<rustls::ClientConfig, String> {
    let shown = ca_file.display();
    let pem = std::fs::read(ca_file).map_err(|e| format!("ca_file {shown}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("ca_file {shown}: {e}"))?;
        roots.add(cert).map_err(|e| format!("ca_file {shown}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("ca_file {shown}: no PEM certificate in it"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
