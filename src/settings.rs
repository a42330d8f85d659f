//! What every subsystem's settings have in common: an error that names the key, and where
//! relative paths and secrets come from (the config file's folder, secret files, the
//! environment).
//!
//! Each subsystem owns its section of the file (`server::settings`, `directory::settings`, ...):
//! the serde type mirroring it, its defaults, and its validation into the settings it runs on.
//! `config` only assembles them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::secret::Secret;

/// A value that is not acceptable: the key (relative to where it was checked) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }

    /// The same error, its key under `section` (`listen` in `portal` → `portal.listen`).
    pub fn within(self, section: &str) -> Self {
        Self { key: format!("{section}.{}", self.key), message: self.message }
    }
}

/// Largest configuration-like file radmfa reads (the config, a drop-in, a dictionary file, the
/// users file): far above any real one, well below what would exhaust memory.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Reads a file of text the admin names, refusing what is not a regular file (a FIFO would
/// block a reload for ever, `/dev/zero` would fill memory) and what is over `limit` bytes.
/// A symbolic link to a regular file is followed.
pub fn read_text_file(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut text = String::new();
    std::fs::File::open(path)?.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("larger than {} MiB", limit / 1024 / 1024)));
    }
    Ok(text)
}

/// Where a section's relative paths and secrets are read from.
pub struct Sources<'a> {
    /// The config file's folder: relative paths resolve against it.
    pub base: &'a Path,
    /// The environment (injected, so tests need not set real variables).
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Sources<'_> {
    pub fn path(&self, path: impl AsRef<Path>) -> PathBuf {
        self.base.join(path)
    }

    /// A secret given inline, in a file, or in the environment variable `env_name` (which wins).
    pub fn secret(&self, inline: Option<Secret<String>>, file: Option<&Path>, env_name: &str) -> Result<Option<Secret<String>>, String> {
        if let Some(value) = (self.env)(env_name) {
            return one_line(Secret::new(value), &format!("the environment variable {env_name}")).map(Some);
        }
        match (inline, file) {
            (Some(_), Some(_)) => Err("set the value or its _file, not both".into()),
            (Some(value), None) => Ok(Some(value)),
            (None, Some(file)) => read_secret_file(&self.path(file)).map(Some),
            (None, None) => Ok(None),
        }
    }
}

/// A secret file: its one line, the line break after it dropped. More lines are an error (a
/// key file or a certificate named by mistake), and so is an empty file.
pub fn read_secret_file(path: &Path) -> Result<Secret<String>, String> {
    // A secret is one line: 64 KiB is ample.
    let text = Secret::new(read_text_file(path, 64 * 1024).map_err(|e| format!("{}: {e}", path.display()))?);
    one_line(text, &path.display().to_string())
}

/// A secret's one line (a line break after it dropped), from a file or the environment alike.
pub fn one_line(text: Secret<String>, from: &str) -> Result<Secret<String>, String> {
    let value = text.expose().strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(text.expose());
    if value.contains(['\n', '\r']) {
        return Err(format!("{from}: holds more than one line; a secret is given alone, on one line"));
    }
    if value.trim().is_empty() {
        return Err(format!("{from}: is empty"));
    }
    Ok(Secret::new(value.to_owned()))
}

/// An address or a CIDR network (host bits dropped): a NAS client, a trusted proxy.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let bad = || format!("{text:?} is not an IP address or CIDR network (e.g. \"10.0.0.5\" or \"10.0.0.0/24\")");
    let net = if text.contains('/') {
        let net: IpNet = text.parse().map_err(|_| bad())?;
        net.trunc()
    } else {
        text.parse::<IpAddr>().map(IpNet::from).map_err(|_| bad())?
    };
    Ok(canonical(net))
}

/// An IPv4-mapped IPv6 network (`::ffff:192.0.2.0/120`) as the IPv4 network it is: peers are
/// matched in their canonical form, so the mapped one would never match.
pub fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map(IpNet::V4).unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_networks_are_their_ipv4_selves() {
        assert_eq!(parse_network("::ffff:192.0.2.7").unwrap(), "192.0.2.7/32".parse::<IpNet>().unwrap());
        assert_eq!(parse_network("::ffff:192.0.2.0/120").unwrap(), "192.0.2.0/24".parse::<IpNet>().unwrap());
        assert_eq!(parse_network("2001:db8::/32").unwrap(), "2001:db8::/32".parse::<IpNet>().unwrap());
        assert_eq!(parse_network("10.1.2.3/8").unwrap(), "10.0.0.0/8".parse::<IpNet>().unwrap());
    }
}
