//! `radmfa generate-docs --out DIR` (hidden; for packaging): man pages for `radmfa` and each of
//! its commands (clap_mangen), and bash, zsh and fish completions (clap_complete), all made
//! from the same clap definitions the command line parses with, so they cannot drift.

use std::path::Path;

use clap::CommandFactory;

use super::{Cli, CliError};

pub(super) fn generate(out: &Path) -> Result<(), CliError> {
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man).map_err(|e| format!("{}: {e}", man.display()))?;
    std::fs::create_dir_all(&completions).map_err(|e| format!("{}: {e}", completions.display()))?;
    let mut command = Cli::command();
    command.build();
    write_man_pages(&command, "radmfa", &man)?;
    for (shell, file) in
        [(clap_complete::Shell::Bash, "radmfa"), (clap_complete::Shell::Zsh, "_radmfa"), (clap_complete::Shell::Fish, "radmfa.fish")]
    {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "radmfa", &mut text);
        let path = completions.join(file);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// `name.1` for `command`, then `name-sub.1` for each visible subcommand, recursively.
fn write_man_pages(command: &clap::Command, name: &str, dir: &Path) -> Result<(), CliError> {
    let page = command.clone().name(name.to_owned());
    let mut text = Vec::new();
    clap_mangen::Man::new(page).title(name.to_uppercase()).section("1").manual("radmfa manual").render(&mut text)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        write_man_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}
