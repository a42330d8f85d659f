//! The Debian package: built by `scripts/package` from the binary under test, checked by
//! lintian, installed on this machine with dpkg (its maintainer scripts make the radmfa user,
//! /var/lib/radmfa and the config's modes), its config checked by `radmfa check-config` run as
//! the radmfa user, then purged. Needs root; a machine where radmfa is installed and holds a
//! database is left alone.

use std::path::Path;
use std::process::Command;

use crate::harness::{binary, system_tool};

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Runs `program args`, returning its standard output; panics with everything on failure.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{program} {args:?} failed:\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode_and_owner(path: &str) -> String {
    run("stat", &["-c", "%a %U:%G", path]).trim().to_owned()
}

#[test]
fn the_deb_passes_lintian_installs_and_its_config_checks_as_the_radmfa_user() {
    let (Some(_), Some(_), Some(_)) =
        (system_tool("dpkg-deb", "dpkg"), system_tool("dpkg-shlibdeps", "dpkg-dev"), system_tool("lintian", "lintian"))
    else {
        return;
    };
    let root = run("id", &["-u"]).trim() == "0";
    if !root {
        assert!(!ci(), "the package test installs with dpkg: run the suite as root on CI");
        eprintln!("SKIPPED: installing the package needs root");
        return;
    }
    if Path::new("/var/lib/radmfa/radmfa.db").exists() {
        assert!(!ci(), "radmfa is installed here with a database: the package test would purge it");
        eprintln!("SKIPPED: radmfa is installed here with a database, which the package test would purge");
        return;
    }

    let out = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package");
    let built = Command::new(&script).args(["--binary", binary()]).env("RADMFA_PACKAGE_OUT", out.path()).output().unwrap();
    assert!(
        built.status.success(),
        "scripts/package: {}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = String::from_utf8_lossy(&built.stdout).lines().last().unwrap().to_owned();
    assert!(deb.ends_with(".deb") && Path::new(&deb).is_file(), "{deb}");

    // Contents: what an admin expects to find.
    let listing = run("dpkg-deb", &["-c", &deb]);
    for path in [
        "./usr/bin/radmfa",
        "./lib/systemd/system/radmfa.service",
        "./etc/radmfa/radmfa.toml",
        "./usr/share/radmfa/dictionaries/dictionary.rfc2865",
        "./usr/share/man/man1/radmfa.1.gz",
        "./usr/share/man/man1/radmfa-check-config.1.gz",
        "./usr/share/bash-completion/completions/radmfa",
        "./usr/share/zsh/vendor-completions/_radmfa",
        "./usr/share/fish/vendor_completions.d/radmfa.fish",
        "./usr/share/doc/radmfa/copyright",
        "./usr/share/radmfa/grafana/radmfa-dashboard.json",
    ] {
        assert!(listing.lines().any(|l| l.ends_with(path)), "{path} missing from the package:\n{listing}");
    }
    let conffiles = run("dpkg-deb", &["-I", &deb, "conffiles"]);
    assert!(conffiles.contains("/etc/radmfa/radmfa.toml"), "{conffiles}");
    let unit = Command::new("sh")
        .arg("-c")
        .arg(format!("dpkg-deb --fsys-tarfile {deb} | tar -xO ./lib/systemd/system/radmfa.service"))
        .output()
        .unwrap();
    let unit = String::from_utf8_lossy(&unit.stdout);
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID") && unit.contains("ExecStart=/usr/bin/radmfa serve"), "{unit}");

    // lintian: no error, no warning.
    let lint = Command::new("lintian").args(["--fail-on", "error,warning", &deb]).output().unwrap();
    assert!(lint.status.success(), "lintian:\n{}{}", String::from_utf8_lossy(&lint.stdout), String::from_utf8_lossy(&lint.stderr));

    // Installed for real, as an admin does.
    let install = Command::new("dpkg").args(["-i", &deb]).env("DEBIAN_FRONTEND", "noninteractive").output().unwrap();
    let purge = || {
        let out = Command::new("dpkg").args(["--purge", "radmfa"]).output().unwrap();
        assert!(out.status.success(), "dpkg --purge: {}", String::from_utf8_lossy(&out.stderr));
    };
    if !install.status.success() {
        purge();
        panic!("dpkg -i: {}{}", String::from_utf8_lossy(&install.stdout), String::from_utf8_lossy(&install.stderr));
    }
    let checked = std::panic::catch_unwind(|| {
        assert!(run("getent", &["passwd", "radmfa"]).contains(":/var/lib/radmfa:"), "a system user homed in its state folder");
        assert_eq!(mode_and_owner("/var/lib/radmfa"), "700 radmfa:radmfa");
        assert_eq!(mode_and_owner("/etc/radmfa"), "750 root:radmfa");
        assert_eq!(mode_and_owner("/etc/radmfa/radmfa.toml"), "640 root:radmfa");
        assert_eq!(mode_and_owner("/etc/radmfa/conf.d"), "750 root:radmfa");
        let check = run("runuser", &["-u", "radmfa", "--", "/usr/bin/radmfa", "check-config", "--config", "/etc/radmfa/radmfa.toml"]);
        assert!(check.contains("/etc/radmfa/radmfa.toml: OK"), "{check}");
        assert!(check.contains("creates /var/lib/radmfa/master.key"), "{check}");
        // A NAS added the way the packaged config says: a conf.d drop-in.
        std::fs::write(
            "/etc/radmfa/conf.d/netscaler-1.toml",
            "[[client]]\nname = \"netscaler-1\"\naddress = \"192.0.2.10\"\nsecret = \"a-long-shared-secret-1\"\n",
        )
        .unwrap();
        run("chown", &["root:radmfa", "/etc/radmfa/conf.d/netscaler-1.toml"]);
        run("chmod", &["0640", "/etc/radmfa/conf.d/netscaler-1.toml"]);
        let check = run("runuser", &["-u", "radmfa", "--", "/usr/bin/radmfa", "check-config"]);
        assert!(check.contains("1 client(s) (1 conf.d file(s))") && !check.contains("warning"), "{check}");
        // The completions parse.
        run("bash", &["-n", "/usr/share/bash-completion/completions/radmfa"]);
    });
    std::fs::remove_file("/etc/radmfa/conf.d/netscaler-1.toml").ok();
    purge();
    assert!(!Path::new("/var/lib/radmfa").exists(), "purge removes the state folder");
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}
